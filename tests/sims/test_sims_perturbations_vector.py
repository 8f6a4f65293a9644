"""Perturbation levels change what they claim (and only that); vector envs step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sims
from sims.palette import HELDOUT_COLORS, TRAIN_COLORS
from sims.perturbations import parse_perturbation


def reset(task: str, perturbation: str, seed: int = 0, **kwargs) -> tuple[gym.Env, dict]:
    env = sims.make_env(task, perturbation=perturbation, **kwargs)
    obs, _ = env.reset(seed=seed)
    return env, obs


def rollout_states(env: gym.Env, seed: int, steps: int = 8) -> np.ndarray:
    """States under a fixed action sequence (the same for every env)."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(42)
    states = [obs["observation.state"]]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        states.append(obs["observation.state"])
    return np.stack(states)


def test_parse_perturbation() -> None:
    assert parse_perturbation("none") == frozenset()
    assert parse_perturbation("visual, dynamics") == {"visual", "dynamics"}


def test_visual_changes_pixels_not_physics() -> None:
    base, base_obs = reset("place_cube", "none", image_size=48)
    vis, vis_obs = reset("place_cube", "visual", image_size=48)
    m0, m1 = base.unwrapped.physics.model, vis.unwrapped.physics.model
    table = base.unwrapped.physics.geom_id("table")
    assert not np.allclose(m0.geom_rgba[table], m1.geom_rgba[table])
    assert not np.allclose(m0.light_diffuse, m1.light_diffuse)
    distractor = vis.unwrapped.physics.geom_id("distractor0")
    assert m1.geom_rgba[distractor, 3] == 1.0 and m0.geom_rgba[distractor, 3] == 0.0
    diff = np.abs(base_obs["observation.images.front"].astype(int) - vis_obs["observation.images.front"])
    assert diff.mean() > 10
    # Same task draw and identical dynamics under identical actions.
    assert base_obs["task"] == vis_obs["task"]
    base_s = sims.make_env("place_cube", obs_mode="state")
    vis_s = sims.make_env("place_cube", obs_mode="state", perturbation="visual")
    np.testing.assert_array_equal(rollout_states(base_s, 3), rollout_states(vis_s, 3))


def test_semantic_uses_heldout_instructions_and_colors() -> None:
    cls = sims.registry.get_task_class("pick_cube")
    for seed in range(4):
        env, obs = reset("pick_cube", "semantic", seed=seed, obs_mode="state")
        heldout = [t.split("{")[0] for t in cls.heldout_templates]
        assert any(obs["task"].startswith(h) for h in heldout), obs["task"]
        assert any(c in obs["task"] for c in HELDOUT_COLORS)
        assert not any(c in obs["task"].split() for c in TRAIN_COLORS)
        rgba = env.unwrapped.physics.model.geom_rgba[env.unwrapped.task.cube.geom, :3]
        assert any(np.allclose(rgba, c) for c in HELDOUT_COLORS.values())


def test_training_instructions_never_heldout() -> None:
    cls = sims.registry.get_task_class("place_cube")
    for seed in range(6):
        _, obs = reset("place_cube", "none", seed=seed, obs_mode="state")
        assert any(obs["task"].startswith(t.split("{")[0]) for t in cls.templates)


def test_execution_changes_initial_pose_and_displaces_object() -> None:
    _, base = reset("lift_cube", "none", seed=0, obs_mode="state")
    env, perturbed = reset("lift_cube", "execution", seed=0, obs_mode="state")
    joint_delta = np.abs(base["observation.state"][:6] - perturbed["observation.state"][:6])
    assert joint_delta.max() > 0.03
    sim = env.unwrapped
    cube = sim.privileged_state()["cube"].copy()
    jumps = []
    for _ in range(10):
        env.step(np.zeros(7, dtype=np.float32))  # the arm holds still: the cube should too
        now = sim.privileged_state()["cube"]
        jumps.append(np.linalg.norm(now[:2] - cube[:2]))
        cube = now.copy()
    assert max(jumps) > 0.025


def test_dynamics_scales_friction_mass_damping() -> None:
    base, _ = reset("push_cube", "none", seed=0, obs_mode="state")
    dyn, _ = reset("push_cube", "dynamics", seed=0, obs_mode="state")
    m0, m1 = base.unwrapped.physics.model, dyn.unwrapped.physics.model
    cube = base.unwrapped.physics.body_id("cube")
    assert not np.allclose(m0.geom_friction[:, 0], m1.geom_friction[:, 0])
    assert m0.body_mass[cube] != m1.body_mass[cube]
    assert not np.allclose(m0.dof_damping, m1.dof_damping)
    params = dyn.unwrapped.perturber.params
    assert {"friction_scale", "mass_scale", "damping_scale"} <= set(params)
    # Reset without the level restores nominal values (nothing leaks across episodes).
    dyn.unwrapped.perturber.levels = frozenset()
    dyn.reset(seed=0)
    np.testing.assert_array_equal(m0.geom_friction, m1.geom_friction)


@pytest.mark.parametrize("level", ["visual", "semantic", "execution", "dynamics"])
def test_expert_still_runs_under_each_level(level: str) -> None:
    env = sims.make_env("place_cube", obs_mode="state", perturbation=level)
    expert = sims.make_expert("place_cube", env)
    obs, _ = env.reset(seed=1)
    for _ in range(env.unwrapped.max_episode_steps):
        obs, _, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    assert info["is_success"], f"expert failed under {level}"


def test_combined_levels() -> None:
    env, obs = reset("lift_cube", "visual,semantic", seed=0, image_size=32)
    assert env.unwrapped.perturbation == {"visual", "semantic"}
    assert any(c in obs["task"] for c in HELDOUT_COLORS)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_vector_env_steps(kind: str) -> None:
    venv = sims.make_vec_env("lift_cube", 2, kind, image_size=32, cameras=["front"])
    try:
        obs, _ = venv.reset(seed=[0, 1])
        assert obs["observation.images.front"].shape == (2, 32, 32, 3)
        assert obs["observation.state"].shape == (2, 14)
        assert len(obs["task"]) == 2 and all(isinstance(t, str) and t for t in obs["task"])
        single = sims.make_env("lift_cube", image_size=32, cameras=["front"])
        single_obs, _ = single.reset(seed=1)
        assert obs["task"][1] == single_obs["task"]
        np.testing.assert_array_equal(obs["observation.state"][1], single_obs["observation.state"])
        for _ in range(3):
            obs, reward, _terminated, _truncated, _info = venv.step(np.zeros((2, 7), dtype=np.float32))
        assert reward.shape == (2,) and obs["observation.state"].dtype == np.float32
        venv.reset(seed=[7, 8])
        obs, *_ = venv.step(np.zeros((2, 7), dtype=np.float32))
        single.reset(seed=8)
        assert obs["task"][1] == single.unwrapped.instruction  # instructions are not stale
    finally:
        venv.close()
