"""The MJX backend (sims/mjx_env.py, --source mjx): physics agreement with the C backend from the
same initial states, the chunk-step contract, seeding, auto-reset, the scripted expert's actions
succeeding through MJX, and the missing-extra error. Compiling on CPU takes ~1-2 min per task,
so each task's source is built once per module (small batch) and the persistent JAX cache is on."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("mujoco.mjx")
from sims.env import SimEnv
from sims.mjx_env import (
    MjxTask,
    c_agreement,
    c_expert_actions,
    c_reset_states,
    check_task,
    enable_compilation_cache,
)
from vla_rft.contract import STATE_KEY, ContractError
from vla_rft.errors import UserInputError
from vla_rft.sources import SourceSpec, make_source
from vla_rft.sources.mjx_source import MjxSource, jax_to_torch, torch_to_jax

enable_compilation_cache()
N, H = 4, 4
SEEDS = [0, 1, 2, 3]
# Agreement tolerances over 48 control steps (4.8 s, 2400 substeps) from the same states, float32
# CG (MJX) against float64 Newton (C); measured: 2.1e-6 rad, 3.7e-7 m (docs/mjx.md).
REACH_JOINT_TOL = 1e-4  # rad
REACH_EE_TOL = 1e-4  # m


@pytest.fixture(scope="module")
def reach():
    return MjxSource("reach_target", N, H, cameras=["front"], image_size=8, env={"reward_type": "potential"})


def _random_actions(steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (N, steps, 7)) * [1, 1, 1, 0.3, 0.3, 0.3, 1]).astype(np.float32)


def _c_envs(task: str) -> list[SimEnv]:
    envs = [SimEnv(task, obs_mode="state") for _ in SEEDS]
    for env, seed in zip(envs, SEEDS, strict=True):
        env.reset(seed=seed)
    return envs


def test_reach_physics_tracks_the_c_backend_from_the_same_states(reach):
    """Same initial states (C resets), same 48 actions: joints and EE stay within the tolerance."""
    obs = reach.reset_to(c_reset_states("reach_target", SEEDS), SEEDS)
    c0 = np.stack([e._observation()[STATE_KEY] for e in _c_envs("reach_target")])
    np.testing.assert_allclose(obs[STATE_KEY][:, :14], c0, atol=1e-5)
    err = c_agreement(reach.env, SEEDS, _random_actions(48), H)
    assert len(err["ee"]) == 12 and not err["c_success"].any()  # every env compared at every chunk end
    assert err["joint"].max() < REACH_JOINT_TOL and err["ee"].max() < REACH_EE_TOL, err
    assert err["object"].max() < 1e-6  # the target does not move


def test_reach_expert_actions_replayed_through_mjx_succeed_on_the_same_step(reach):
    actions, success_at = c_expert_actions("reach_target", SEEDS, 60)
    assert min(success_at) >= 0  # the C expert solves every seed
    reach.reset_to(c_reset_states("reach_target", SEEDS), SEEDS)
    ended_at = np.full(N, -1)
    for k in range(0, 60, H):
        out = reach.step(actions[:, k:k + H])
        executed = out.executed.sum(axis=1)
        assert (out.executed == (np.arange(H)[None] < executed[:, None])).all()  # a prefix
        for i in np.flatnonzero(out.terminated & (ended_at < 0)):
            assert out.success[i] and i in out.final_obs
            ended_at[i] = k + executed[i] - 1
        if (ended_at >= 0).all():
            break
    np.testing.assert_array_equal(ended_at, success_at)


def test_chunk_step_contract_truncation_and_auto_reset(reach):
    first = reach.reset(SEEDS)
    assert first[STATE_KEY].shape == (N, 17) and first[STATE_KEY].dtype == np.float32
    assert first["observation.images.front"].shape == (N, 8, 8, 3) and len(first["task"]) == N
    still = np.zeros((N, H, 7), np.float32)
    still[..., 6] = -1.0
    for k in range(15):  # 15 chunks of 4 = the 60-step time limit
        out = reach.step(still)
        assert out.rewards.shape == (N, H) and out.rewards.dtype == np.float64
        assert out.executed.shape == (N, H) and out.executed.dtype == bool
        if k < 14:
            assert not out.done.any()
    assert out.truncated.all() and not out.terminated.any() and sorted(out.final_obs) == list(range(N))
    final = np.concatenate([out.final_obs[i][STATE_KEY] for i in range(N)])
    np.testing.assert_allclose(final[:, 14:17], first[STATE_KEY][:, 14:17])  # the ended episode's target
    assert not np.allclose(out.obs[STATE_KEY][:, 14:17], first[STATE_KEY][:, 14:17])  # a new episode
    assert np.abs(out.obs[STATE_KEY][:, :6] - first[STATE_KEY][:, :6]).max() < 0.05  # back near home


def test_seeded_resets_repeat_and_differ_across_seeds(reach):
    a = reach.reset(SEEDS)[STATE_KEY]
    step_a = reach.step(_random_actions(H)).rewards
    b = reach.reset(SEEDS)[STATE_KEY]
    step_b = reach.step(_random_actions(H)).rewards
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(step_a, step_b)
    c = reach.reset([10, 11, 12, 13])[STATE_KEY]
    assert not np.allclose(a[:, 14:17], c[:, 14:17])
    targets = reach.reset(list(range(N)))[STATE_KEY][:, 14:17]
    assert (targets >= [0.30, -0.25, 0.05]).all() and (targets <= [0.65, 0.25, 0.30]).all()


def test_torch_chunks_through_dlpack_and_bad_chunks(reach):
    torch = pytest.importorskip("torch")
    reach.reset(SEEDS)
    t = torch.zeros(N, H, 7)
    j = torch_to_jax(t)
    assert jax_to_torch(j).data_ptr() == t.data_ptr()  # zero-copy both ways on CPU
    out = reach.step(t)
    assert out.executed.all()
    with pytest.raises(ContractError):
        reach.step(np.full((N, H, 7), np.nan, np.float32))
    with pytest.raises(ContractError):
        reach.step(np.zeros((N, H + 1, 7), np.float32))


def test_make_source_builds_mjx_from_a_finetune_spec():
    spec = SourceSpec("reach_target", N, H, env_kwargs={"obs_mode": "rgb", "cameras": ["front"], "image_size": 8,
                                                        "reward_type": "potential", "perturbation": "none"})
    src = make_source("mjx", spec)
    assert isinstance(src, MjxSource) and src.env.reward_type == "potential" and src.cameras == ["front"]
    with pytest.raises(UserInputError, match="perturbation"):
        make_source("mjx", SourceSpec("reach_target", N, H, env_kwargs={"perturbation": "visual"}))
    with pytest.raises(UserInputError, match="no MJX port"):
        check_task("press_button")


def test_missing_jax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ImportError
    monkeypatch.delitem(sys.modules, "sims.mjx_env")
    with pytest.raises(UserInputError, match=r"pip install 'vla-rft\[mjx\]'"):
        importlib.import_module("sims.mjx_env")
    with pytest.raises(UserInputError, match=r"vla-rft\[mjx\]"):
        make_source("mjx", SourceSpec("reach_target", 2, 2))


@pytest.mark.slow
def test_push_contact_physics_and_expert_success_through_mjx():
    """The contact task: the C expert's actions replayed open loop from the same states push the
    cube onto the goal in MJX too, and the cube tracks the C cube while being pushed."""
    actions, success_at = c_expert_actions("push_cube", SEEDS, 100)
    assert min(success_at) >= 0
    err = c_agreement(MjxTask("push_cube", terminate_on_success=False), SEEDS, actions, 1)
    assert err["mjx_success"].all() and err["c_success"].all()
    assert err["object"].max() < 0.01, err  # 1 cm over a whole push (measured 3.6 mm; contact makes errors grow)
