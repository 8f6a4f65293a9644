"""GRPO: group advantages by hand, groups share initial states, the update follows the advantage."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from policy_fixtures import make_policy
from synthetic_env import make_point_vec_env

from vla_rft.algorithms.grpo import GRPO, GRPOConfig, SimGroupProvider, group_advantages
from vla_rft.algorithms.optim import RLOptimConfig
from vla_rft.algorithms.rollout import flat_obs


def test_group_advantages_by_hand():
    reward = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    adv = group_advantages(reward, group, eps=1e-6)
    std = np.sqrt(0.25 * 0.75)  # population std of [1, 0, 0, 0]
    np.testing.assert_allclose(adv[:4], [0.75 / (std + 1e-6)] + [-0.25 / (std + 1e-6)] * 3)
    np.testing.assert_allclose(adv[4:], 0.0)  # a group that all succeeded carries no signal


def _provider(groups=2, size=4):
    cfg = GRPOConfig(groups=groups, group_size=size, max_chunks=4, minibatches=1)
    return cfg, SimGroupProvider(make_point_vec_env(groups * size, reward_type="sparse"), cfg, seed=3)


def test_group_members_start_from_the_same_state_and_only_first_episodes_count():
    _, provider = _provider()
    groups = provider.collect_groups(make_policy().eval(), iteration=0)
    start = groups.rollout.obs["observation.state"][0]  # (N, S)
    np.testing.assert_array_equal(start[0], start[3])
    assert not np.array_equal(start[0], start[4])
    ro = groups.rollout
    assert len({e["env"] for e in ro.episodes}) == len(ro.episodes)  # one episode per env at most
    for i in range(ro.shape[1]):  # valid slots are a prefix ending at the first done
        v = ro.valid[:, i]
        assert v[: v.sum()].all()


def test_update_raises_the_log_prob_of_successful_rollouts():
    cfg, provider = _provider(groups=1, size=8)
    policy = make_policy(seed=1, init_log_std=-0.5).eval()
    grpo = GRPO(policy, copy.deepcopy(policy), cfg, RLOptimConfig(lr_policy=1e-3, lr_noise=1e-3), 1)
    groups = provider.collect_groups(policy, 0)
    groups.reward = np.array([1.0, 0, 0, 0, 0, 0, 0, 1.0])  # a verified reward chosen for the test
    ro = groups.rollout
    idx = np.flatnonzero(ro.valid.reshape(-1))
    env_of = np.broadcast_to(np.arange(ro.shape[1])[None], ro.shape).reshape(-1)[idx]
    obs, lat = flat_obs(ro.obs, idx), ro.latents.reshape(-1, *ro.latents.shape[2:])[idx]
    with torch.no_grad():
        before = policy.log_prob(obs, lat)
    metrics = grpo.update(groups, 0, np.random.default_rng(0))
    with torch.no_grad():
        delta = (policy.log_prob(obs, lat) - before).numpy()
    good = np.isin(env_of, [0, 7])
    assert delta[good].mean() > delta[~good].mean()
    assert metrics["frac_groups_no_signal"] == 0.0 and metrics["group_reward_mean"] == pytest.approx(0.25)
