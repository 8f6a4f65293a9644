"""Chunk bookkeeping: GAE by hand, chunk rewards/discounts, autoreset modes, log-prob consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from policy_fixtures import make_policy
from stub_env import counter_source

from vla_rft.algorithms.rollout import ChunkCollector, chunk_gae, flat_obs

G = 0.9


def test_chunk_gae_matches_hand_computation():
    # One env, three chunks: full chunk (4 steps), chunk truncated after 2 steps, full chunk.
    r = np.array([[1.0], [2.0], [0.5]])
    v = np.array([[0.5], [1.0], [0.2]])
    nv = np.array([[1.0], [3.0], [0.7]])  # V(next start), V(final obs of the truncated episode), bootstrap
    steps = np.array([[4], [2], [4]])
    term = np.zeros((3, 1))
    done = np.array([[0.0], [1.0], [0.0]])
    valid = np.ones((3, 1), bool)
    lam = 0.8
    adv, ret = chunk_gae(r, v, nv, steps, term, done, valid, G, lam)
    d2 = 0.5 + G**4 * 0.7 - 0.2
    d1 = 2.0 + G**2 * 3.0 - 1.0  # truncation: bootstrap from the final obs, no recursion past it
    d0 = 1.0 + G**4 * 1.0 - 0.5
    np.testing.assert_allclose(adv[:, 0], [d0 + G**4 * lam * d1, d1, d2])
    np.testing.assert_allclose(ret, adv + v)
    # The same chunk terminated instead: no bootstrap at all.
    adv_t, _ = chunk_gae(r, v, nv, steps, done, done, valid, G, lam)
    np.testing.assert_allclose(adv_t[1, 0], 2.0 - 1.0)
    np.testing.assert_allclose(adv_t[0, 0], d0 + G**4 * lam * 1.0)
    # An invalid slot carries nothing.
    adv_i, _ = chunk_gae(r, v, nv, steps, term, done, np.array([[True], [True], [False]]), G, lam)
    assert adv_i[2, 0] == 0.0


def _collect(length, terminate=False, chunks=3, n=2):
    policy = make_policy().eval()
    col = ChunkCollector(counter_source(n, length, terminate), G)
    return policy, col.collect(policy, chunks, list(range(n)), sample_seed=0)


def test_chunk_rewards_steps_and_truncation_bootstrap():
    policy, ro = _collect(length=6)  # h = 4: chunk 0 full, chunk 1 ends after 2 steps
    np.testing.assert_allclose(ro.rewards[0], 1 + G + G**2 + G**3)
    np.testing.assert_allclose(ro.rewards[1], 1 + G)
    assert ro.steps[:, 0].tolist() == [4, 2, 4]
    assert ro.executed[1, 0].tolist() == [True, True, False, False]
    np.testing.assert_array_equal(ro.step_rewards[1, 0], [1, 1, 0, 0])
    assert ro.done[:, 0].tolist() == [False, True, False] and not ro.terminated.any()
    # The truncated chunk bootstraps from V(the episode's last observation, t = 6).
    last = {"observation.images.front": np.zeros((1, 32, 32, 3), np.uint8), "task": ["count"],
            "observation.state": np.array([[0.6, 0, 0, 0, 0]], np.float32)}
    np.testing.assert_allclose(ro.next_values[1, 0], policy.value(last).item(), atol=1e-4)
    assert abs(ro.next_values[1, 0] - ro.values[2, 0]) > 1e-3  # not the next episode's start
    # A transition that did not end leads to the next chunk's start value.
    np.testing.assert_allclose(ro.next_values[0], ro.values[1])
    assert [e["length"] for e in ro.episodes] == [6, 6] and ro.valid.all()
    assert ro.env_steps == 2 * (4 + 2 + 4)


def test_an_episode_that_ends_mid_chunk_plays_no_filler_action_into_the_next():
    """The rest of the chunk is not executed: the next episode starts at the next chunk's start
    (t = 0, one reset later), exactly where evaluation starts it, not after filler steps."""
    _, ro = _collect(length=6)
    state = ro.obs["observation.state"]
    assert state[2, 0, 0] == 0.0 and state[2, 0, 1] == 1.0  # fresh episode at chunk 2's start
    assert ro.steps[:, 1].tolist() == [4, 2, 4]


def test_termination_is_flagged():
    _, ro = _collect(length=3, terminate=True, chunks=2)
    assert ro.terminated[0].all() and ro.done[0].all() and ro.steps[0].tolist() == [3, 3]
    assert all(e["success"] for e in ro.episodes)


def test_policy_and_source_chunk_sizes_must_agree():
    with pytest.raises(ValueError, match="chunks of 4 actions"):
        ChunkCollector(counter_source(1, 4, chunk_size=3), G).collect(make_policy().eval(), 1, [0], 0)


@pytest.mark.parametrize("head", ["gaussian", "flow"])
def test_stored_log_probs_match_evaluate(head):
    torch.manual_seed(0)
    policy = make_policy(head).eval()
    ro = ChunkCollector(counter_source(3, 5), G).collect(policy, 2, [0, 1, 2], sample_seed=1)
    idx = np.arange(6)
    lat = ro.latents.reshape(-1, *ro.latents.shape[2:])
    with torch.no_grad():
        ev = policy.evaluate(flat_obs(ro.obs, idx), lat)
    np.testing.assert_allclose(ev.step_log_prob.numpy(), ro.log_probs.reshape(6, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.value.numpy(), ro.values.reshape(-1), rtol=1e-5, atol=1e-6)


def test_same_seed_same_rollout():
    _, a = _collect(length=6)
    _, b = _collect(length=6)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.rewards, b.rewards)


def test_lazy_frames_give_the_same_rollout_as_rendering_every_step():
    """sims envs render only chunk ends, resets and episode ends in the sim source: the data is
    identical (images at every chunk start, truncation bootstraps included) with far fewer
    frames. Time limit 10 with h = 4 truncates inside a chunk and desynchronizes the envs."""
    from sim_fixtures import sim_policy

    from vla_rft.sources import SourceSpec, make_source

    policy = sim_policy().eval()
    out = {}
    for lazy in (False, True):
        spec = SourceSpec("reach_target", 3, int(policy.spec.chunk_size), "sync",
                          {"cameras": ["front"], "image_size": 32, "max_episode_steps": 10},
                          options={"lazy_frames": lazy})
        source = make_source("sim", spec)
        frames = [0]
        for e in source.env.envs:  # count renders
            inner = e.unwrapped
            orig = inner._render_camera

            def counted(cam, orig=orig, frames=frames):
                frames[0] += 1
                return orig(cam)

            inner._render_camera = counted
        out[lazy] = (ChunkCollector(source, G).collect(policy, 6, [4, 5, 6], sample_seed=2), frames[0])
        source.close()
    (eager, n_eager), (lazy, n_lazy) = out[False], out[True]
    for k in eager.obs:
        assert np.array_equal(eager.obs[k], lazy.obs[k]), k
    for name in ("rewards", "steps", "terminated", "done", "next_values", "valid", "log_probs", "executed"):
        np.testing.assert_array_equal(getattr(eager, name), getattr(lazy, name), err_msg=name)
    assert eager.done.sum() >= 3 and eager.episodes == lazy.episodes
    assert n_lazy < n_eager / 2


def test_fake_source_and_gym_source_agree():
    """The numpy point-home source and the same task as gymnasium envs in the vector source give
    the same rollout: two implementations of one interface."""
    from synthetic_env import point_source

    from vla_rft.sources import SourceSpec, make_source

    policy = make_policy().eval()
    fake = make_source("fake", SourceSpec("point", 3, 4, env_kwargs={"max_episode_steps": 12}))
    a = ChunkCollector(fake, G).collect(policy, 5, [7, 8, 9], sample_seed=3)
    b = ChunkCollector(point_source(3), G).collect(policy, 5, [7, 8, 9], sample_seed=3)
    np.testing.assert_allclose(a.obs["observation.state"], b.obs["observation.state"], atol=1e-6)
    for name in ("steps", "terminated", "done", "executed"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_allclose(a.rewards, b.rewards, atol=1e-6)
