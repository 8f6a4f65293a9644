"""Chunk bookkeeping: GAE by hand, chunk rewards/discounts, autoreset modes, log-prob consistency."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from policy_fixtures import make_policy
from stub_env import counter_vec_env

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


def _collect(mode, length, terminate=False, chunks=3, n=2):
    policy = make_policy().eval()
    col = ChunkCollector(counter_vec_env(n, length, mode, terminate), G)
    return policy, col.collect(policy, chunks, list(range(n)), sample_seed=0)


def test_chunk_rewards_steps_and_truncation_bootstrap():
    policy, ro = _collect("same_step", length=6)  # h = 4: chunk 0 full, chunk 1 ends after 2 steps
    np.testing.assert_allclose(ro.rewards[0], 1 + G + G**2 + G**3)
    np.testing.assert_allclose(ro.rewards[1], 1 + G)
    assert ro.steps[:, 0].tolist() == [4, 2, 4]
    assert ro.done[:, 0].tolist() == [False, True, True] and not ro.terminated.any()  # 2 idle + 4 = 6
    # Chunk 2 starts the new episode (SAME_STEP: no reset step) after the 2 idle steps that
    # finished chunk 1 in lockstep.
    assert ro.obs["observation.state"][2, 0, 0] == pytest.approx(0.2) and ro.obs["observation.state"][2, 0, 1] == 1.0
    # The truncated chunk bootstraps from V(the episode's last observation, t = 6).
    last = {"observation.images.front": np.zeros((1, 32, 32, 3), np.uint8), "task": ["count"],
            "observation.state": np.array([[0.6, 0, 0, 0, 0]], np.float32)}
    np.testing.assert_allclose(ro.next_values[1, 0], policy.value(last).item(), atol=1e-4)
    assert abs(ro.next_values[1, 0] - ro.values[2, 0]) > 1e-3  # not the next episode's start
    # A transition that did not end leads to the next chunk's start value.
    np.testing.assert_allclose(ro.next_values[0], ro.values[1])
    # episode lengths count the policy's steps (the idle steps before chunk 2 are not its own)
    assert [e["length"] for e in ro.episodes] == [6, 6, 4, 4] and ro.valid.all()


def test_termination_is_flagged():
    _, ro = _collect("same_step", length=3, terminate=True, chunks=2)
    assert ro.terminated[0].all() and ro.done[0].all() and ro.steps[0].tolist() == [3, 3]
    assert all(e["success"] for e in ro.episodes)


def test_next_step_autoreset_reset_step_is_not_a_transition():
    # Episodes of 4 steps end on a chunk's last step: the next chunk's first step is the
    # reset step, so that chunk slot is invalid; the chunk after starts the new episode cleanly.
    _, ro = _collect("next_step", length=4, chunks=3)
    assert ro.valid[:, 0].tolist() == [True, False, True]
    assert ro.done[:, 0].tolist() == [True, False, True] and ro.steps[:, 0].tolist() == [4, 0, 1]
    state = ro.obs["observation.state"]
    # reset at step 0 of chunk 1, then 3 idle steps in the new episode
    assert state[2, 0, 1] == 1.0 and state[2, 0, 0] == pytest.approx(0.3)
    # Episodes of 6 steps end mid-chunk: reset step inside the chunk, no invalid slot.
    _, ro6 = _collect("next_step", length=6, chunks=3)
    assert ro6.valid.all() and ro6.steps[:, 0].tolist() == [4, 2, 4]
    assert [e["return"] for e in ro6.episodes] == [6.0, 6.0]  # the reset step added no reward


def test_disabled_autoreset_is_refused():
    with pytest.raises(ValueError, match="autoreset"):
        ChunkCollector(counter_vec_env(1, 4, "disabled"), G)


@pytest.mark.parametrize("head", ["gaussian", "flow"])
def test_stored_log_probs_match_evaluate(head):
    torch.manual_seed(0)
    policy = make_policy(head).eval()
    ro = ChunkCollector(counter_vec_env(3, 5), G).collect(policy, 2, [0, 1, 2], sample_seed=1)
    idx = np.arange(6)
    lat = ro.latents.reshape(-1, *ro.latents.shape[2:])
    with torch.no_grad():
        ev = policy.evaluate(flat_obs(ro.obs, idx), lat)
    np.testing.assert_allclose(ev.log_prob.numpy(), ro.log_probs.reshape(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.value.numpy(), ro.values.reshape(-1), rtol=1e-5, atol=1e-6)


def test_same_seed_same_rollout():
    _, a = _collect("same_step", length=6)
    _, b = _collect("same_step", length=6)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.rewards, b.rewards)


def test_lazy_frames_give_the_same_rollout_as_rendering_every_step():
    """sims envs render only chunk ends, resets and episode ends under the collector: the data
    is identical (images at every chunk start, truncation bootstraps included) with far fewer
    frames. Time limit 10 with h = 4 truncates inside a chunk and desynchronizes the envs."""
    from sim_fixtures import sim_policy

    from vla_rft.algorithms.envs import make_chunk_vec_env

    policy = sim_policy().eval()
    out = {}
    for lazy in (False, True):
        env = make_chunk_vec_env("reach_target", 3, cameras=["front"], image_size=32, max_episode_steps=10)
        frames = [0]
        for e in env.envs:  # count renders
            inner = e.unwrapped
            orig = inner._render_camera

            def counted(cam, orig=orig, frames=frames):
                frames[0] += 1
                return orig(cam)

            inner._render_camera = counted
        col = ChunkCollector(env, G, lazy_frames=lazy)
        assert col.lazy_frames == lazy
        out[lazy] = (col.collect(policy, 6, [4, 5, 6], sample_seed=2), frames[0])
        env.close()
    (eager, n_eager), (lazy, n_lazy) = out[False], out[True]
    for k in eager.obs:
        assert np.array_equal(eager.obs[k], lazy.obs[k]), k
    for name in ("rewards", "steps", "terminated", "done", "next_values", "valid", "log_probs"):
        np.testing.assert_array_equal(getattr(eager, name), getattr(lazy, name), err_msg=name)
    assert eager.done.sum() >= 3 and eager.episodes == lazy.episodes
    assert n_lazy < n_eager / 2
