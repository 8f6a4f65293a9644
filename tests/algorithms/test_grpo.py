"""GRPO: group advantages by hand, groups share initial states, the update follows the advantage."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from policy_fixtures import make_policy
from synthetic_env import point_source

from vla_rft.algorithms.grpo import GRPO, GRPOConfig, chunk_weights, group_advantages, group_seeds
from vla_rft.algorithms.online import OnlineRL
from vla_rft.algorithms.optim import RLOptimConfig
from vla_rft.algorithms.rollout import flat_obs


def test_group_advantages_by_hand():
    reward = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    adv = group_advantages(reward, group, eps=1e-6)
    std = np.sqrt(0.25 * 0.75)  # population std of [1, 0, 0, 0]
    np.testing.assert_allclose(adv[:4], [0.75 / (std + 1e-6)] + [-0.25 / (std + 1e-6)] * 3)
    np.testing.assert_allclose(adv[4:], 0.0)  # a group that all succeeded carries no signal


def _online(groups=2, size=4, seed=3, policy=None, lr=1e-3, radius=0.3, **cfg_kw):
    cfg = GRPOConfig(groups=groups, group_size=size, max_chunks=4, minibatches=1, **cfg_kw)
    policy = policy if policy is not None else make_policy().eval()
    grpo = GRPO(policy, copy.deepcopy(policy), cfg, RLOptimConfig(lr_policy=lr, lr_noise=lr), 50)
    source = point_source(groups * size, reward_type="sparse", success_radius=radius)
    return OnlineRL(grpo, source, cfg.max_chunks, seed)


def test_group_members_start_from_the_same_state_and_only_first_episodes_count():
    ro = _online().collect(0)  # the production path: what finetune's trainer calls
    start = ro.obs["observation.state"][0]  # (N, S)
    np.testing.assert_array_equal(start[0], start[3])
    assert not np.array_equal(start[0], start[4])
    assert len({e["env"] for e in ro.episodes}) == len(ro.episodes)  # one episode per env at most
    for i in range(ro.shape[1]):  # valid slots are a prefix ending at the first done
        v = ro.valid[:, i]
        assert v[: v.sum()].all()


def test_runs_with_different_seeds_train_on_disjoint_initial_states():
    a = {s for it in range(100) for s in group_seeds(0, it, 2, 8)}
    b = {s for it in range(100) for s in group_seeds(1, it, 2, 8)}
    assert not a & b
    sa = _online(seed=0).collect(0).obs["observation.state"][0]
    sb = _online(seed=1).collect(0).obs["observation.state"][0]
    assert not np.allclose(sa, sb)


def test_rollout_weighting_removes_the_length_bias():
    """Rollout 0 is 1 chunk long, rollout 1 is 3: with loss_agg rollout each weighs the same in
    total (so a long failure does not outweigh a short success); chunk is the plain mean."""
    valid = np.array([[True, True], [False, True], [False, True]])
    w = chunk_weights(valid, "rollout", max_chunks=3)
    assert w[:, 0].sum() == pytest.approx(w[:, 1].sum()) and w[valid].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w[:, 1], [2 / 3] * 3)
    np.testing.assert_allclose(chunk_weights(valid, "chunk", 3)[valid], 1.0)
    np.testing.assert_allclose(chunk_weights(valid, "constant", 3)[valid], 4 / 6)  # 4 chunks / (2 x 3)


def test_update_raises_the_log_prob_of_successful_rollouts():
    policy = make_policy(seed=1, init_log_std=-0.5).eval()
    online = _online(groups=1, size=8, policy=policy)
    ro = online.collect(0)
    # a verified reward chosen for the test: rollouts 0 and 7 succeeded, in their first episodes
    ro.episodes = [{"env": i, "success": i in (0, 7), "return": 0.0, "length": 1, "chunk": 0} for i in range(8)]
    idx = np.flatnonzero(ro.valid.reshape(-1))
    env_of = np.broadcast_to(np.arange(ro.shape[1])[None], ro.shape).reshape(-1)[idx]
    obs, lat = flat_obs(ro.obs, idx), ro.latents.reshape(-1, *ro.latents.shape[2:])[idx]
    with torch.no_grad():
        before = policy.log_prob(obs, lat)
    metrics = online.update(ro, 0, 0.0, np.random.default_rng(0))
    with torch.no_grad():
        delta = (policy.log_prob(obs, lat) - before).numpy()
    good = np.isin(env_of, [0, 7])
    assert delta[good].mean() > delta[~good].mean()
    assert metrics["frac_groups_no_signal"] == 0.0 and metrics["group_reward_mean"] == pytest.approx(0.25)


def test_grpo_learns_point_home_on_the_production_path():
    """GRPO through OnlineRL (the object finetune's trainer runs) raises the success rate (per-step
    ratios, which learn this toy task fastest at this lr)."""
    policy = make_policy(seed=0, init_log_std=-0.5).eval()
    online = _online(groups=4, size=8, seed=0, policy=policy, epochs=2, lr=1e-3, radius=0.5, ratio="step")
    rng = np.random.default_rng(0)
    hist = []
    for it in range(60):
        ro = online.collect(it)
        online.update(ro, it, it / 60, rng)
        hist.append(np.mean([e["success"] for e in ro.episodes]) if ro.episodes else 0.0)
    first, last = np.mean(hist[:10]), np.mean(hist[-10:])
    assert first <= 0.2 and last >= first + 0.4, (first, last)


def test_grpo_ranks_rollouts_by_their_first_episode_return_when_asked():
    """grpo.reward return (a world model's dense similarity reward): the first episode's return per env."""
    from types import SimpleNamespace

    from vla_rft.algorithms.rollout import first_episode_success

    ro = SimpleNamespace(shape=(3, 3), episodes=[
        {"env": 0, "success": False, "return": -0.5}, {"env": 1, "success": True, "return": -0.2},
        {"env": 0, "success": True, "return": -9.0}])  # env 0's second episode is not its first
    np.testing.assert_array_equal(first_episode_success(ro), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(first_episode_success(ro, "return"), [-0.5, -0.2, 0.0])
