"""Every registered task: spec conformance, expert success, determinism, rewards, bad inputs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sims
from sims.env import STATE_DIM
from vla_rft.contract import ContractError, validate_observation

# The built-in suite; the external suites' tasks (their own state sizes, optional extras) are
# tested in tests/sims/test_robosuite.py and tests/sims/test_metaworld.py.
BUILTIN = [spec for spec in sims.list_tasks() if spec.family not in ("robosuite", "metaworld")]
TASKS = [spec.name for spec in BUILTIN]


def run_expert(env: gym.Env, task: str, seed: int) -> tuple[bool, int]:
    """Run the task's expert for one episode; return (success, steps)."""
    expert = sims.make_expert(task, env)
    obs, _ = env.reset(seed=seed)
    for step in range(1, env.unwrapped.max_episode_steps + 1):
        obs, _reward, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            return bool(info["is_success"]), step
    return False, step


def test_suite_size_and_families() -> None:
    specs = BUILTIN
    assert len(specs) >= 10
    assert len({s.family for s in specs}) >= 7
    for spec in specs:
        assert spec.gym_id in gym.registry
        assert spec.action_dim == 7 and spec.state_dim == STATE_DIM
        assert len(spec.instructions) >= 3 and all("{" not in i for i in spec.instructions)
        cls = sims.registry.get_task_class(spec.name)
        assert len(cls.templates) >= 3 and len(cls.heldout_templates) >= 2
        assert not set(cls.templates) & set(cls.heldout_templates)


@pytest.mark.parametrize("task", TASKS)
def test_expert_solves_task(task: str) -> None:
    env = sims.make_env(task, obs_mode="state")
    for seed in (11, 12):
        success, steps = run_expert(env, task, seed)
        assert success, f"{task} expert failed on seed {seed}"
        assert steps < env.unwrapped.max_episode_steps


@pytest.mark.parametrize("task", TASKS)
def test_rewards_and_info(task: str) -> None:
    env = sims.make_env(task, obs_mode="state", reward_type="sparse")
    expert = sims.make_expert(task, env)
    obs, info = env.reset(seed=3)
    assert info["task_name"] == task and info["is_success"] is False
    dense = []
    while True:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        assert reward == info["reward_sparse"] == float(info["is_success"])
        assert 0.0 <= info["reward_dense"] <= 1.0
        dense.append(info["reward_dense"])
        if terminated or truncated:
            break
    assert terminated and reward == 1.0 and dense[-1] == 1.0
    assert max(dense[:-1]) > min(dense), "dense reward never changed before success"


@pytest.mark.parametrize("task", ["pick_cube", "open_drawer"])
@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_potential_reward_is_gamma_shaping_of_the_sparse_return(task: str, gamma: float) -> None:
    """r_t = gamma * phi(s_{t+1}) - phi(s_t) + success: the discounted shaping telescopes to
    gamma^T phi(s_T) - phi(s_0) (Ng et al.'s policy invariance), for any gamma; phi = 1 at success."""
    env = sims.make_env(task, obs_mode="state", reward_type="potential", potential_gamma=gamma)
    expert = sims.make_expert(task, env)
    obs, _ = env.reset(seed=5)
    phi0 = env.unwrapped._phi
    ret, t, dense = 0.0, 0, [phi0]
    while True:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        phi_next = info["reward_dense"]
        assert reward == pytest.approx(gamma * phi_next - dense[-1] + float(info["is_success"]))
        dense.append(info["reward_dense"])
        ret += gamma**t * reward
        t += 1
        if terminated or truncated:
            break
    assert terminated and info["is_success"]
    assert dense[-1] == 1.0 and ret == pytest.approx(gamma**t * 1.0 - phi0 + gamma ** (t - 1))
    assert 0.0 <= phi0 < 1.0


def test_contract_shapes_and_dtypes() -> None:
    env = sims.make_env("pick_cube", image_size=48)
    obs, _ = env.reset(seed=0)
    validate_observation(obs, cameras=["front", "wrist"], state_dim=STATE_DIM)
    assert obs["observation.images.front"].shape == (48, 48, 3)
    assert obs["observation.images.front"].dtype == np.uint8
    assert obs["observation.state"].dtype == np.float32
    assert isinstance(obs["task"], str) and "cube" in obs["task"]
    assert env.observation_space.contains(obs)
    state = obs["observation.state"]
    np.testing.assert_allclose(np.linalg.norm(state[10:14]), 1.0, atol=1e-5)  # EE quaternion
    assert 0.0 <= state[6] <= 1.0  # gripper closure
    assert obs["observation.images.front"].std() > 5, "front image is blank"


def test_state_mode_and_camera_selection() -> None:
    state_env = sims.make_env("lift_cube", obs_mode="state")
    obs, _ = state_env.reset(seed=0)
    assert set(obs) == {"observation.state", "task"}
    wrist_env = sims.make_env("lift_cube", cameras=["wrist"])
    obs, _ = wrist_env.reset(seed=0)
    assert set(obs) == {"observation.state", "task", "observation.images.wrist"}
    with pytest.raises(ValueError, match="camera"):
        sims.make_env("lift_cube", cameras=["top"])


def test_same_seed_identical_different_seed_differs() -> None:
    def rollout(seed: int) -> list[dict]:
        env = sims.make_env("stack_cube", image_size=32)
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        rng = np.random.default_rng(0)
        for _ in range(5):
            obs, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
            frames.append(obs)
        return frames

    a, b, c = rollout(5), rollout(5), rollout(6)
    for fa, fb in zip(a, b, strict=True):
        assert fa["task"] == fb["task"]
        for key in ("observation.state", "observation.images.front", "observation.images.wrist"):
            np.testing.assert_array_equal(fa[key], fb[key])
    assert not np.array_equal(a[0]["observation.state"], c[0]["observation.state"])
    assert not np.array_equal(a[0]["observation.images.front"], c[0]["observation.images.front"])


def test_reset_without_seed_continues_the_stream() -> None:
    env = sims.make_env("reach_target", obs_mode="state")
    env.reset(seed=1)
    first = env.unwrapped.privileged_state()["target"]
    env.reset()
    assert not np.array_equal(first, env.unwrapped.privileged_state()["target"])


def test_action_moves_end_effector_in_world_frame() -> None:
    env = sims.make_env("reach_target", obs_mode="state")
    obs, _ = env.reset(seed=0)
    start = obs["observation.state"][7:10].copy()
    for _ in range(4):
        obs, *_ = env.step(np.array([1, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    moved = obs["observation.state"][7:10] - start
    assert moved[0] > 0.05 and abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01


def test_gripper_command_is_absolute() -> None:
    env = sims.make_env("reach_target", obs_mode="state")
    env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1], dtype=np.float32))
    assert obs["observation.state"][6] > 0.9
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    assert obs["observation.state"][6] < 0.1


def test_unknown_task_lists_valid_names_and_suggests() -> None:
    with pytest.raises(ValueError, match="Did you mean 'pick_cube'") as err:
        sims.make_env("pick_cub")
    for name in TASKS:
        assert name in str(err.value)


def test_bad_actions() -> None:
    env = sims.make_env("lift_cube", obs_mode="state")
    env.reset(seed=0)
    with pytest.raises(ContractError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0], dtype=np.float32))
    with pytest.raises(ContractError, match="shape"):
        env.step(np.zeros(6, dtype=np.float32))
    _, _, _, _, info = env.step(np.array([2.0, 0, 0, 0, 0, -3.0, 0], dtype=np.float32))
    assert info["action_clipped"] == 2 and info["action_clipped_total"] == 2


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="perturbation"):
        sims.make_env("lift_cube", perturbation="weather")
    with pytest.raises(ValueError, match="obs_mode"):
        sims.make_env("lift_cube", obs_mode="depth")
    with pytest.raises(ValueError, match="reward_type"):
        sims.make_env("lift_cube", reward_type="shaped")


def test_terminate_on_success_can_be_disabled() -> None:
    env = sims.make_env("reach_target", obs_mode="state", terminate_on_success=False)
    expert = sims.make_expert("reach_target", env)
    obs, _ = env.reset(seed=0)
    successes = 0
    for _ in range(40):
        obs, _, terminated, _, info = env.step(expert(obs))
        assert not terminated
        successes += info["is_success"]
    assert successes > 1


def test_outside_code_can_register_a_task() -> None:
    from sims.tasks.reach import ReachTarget

    @sims.register_task("reach_target_copy_for_test")
    class Copy(ReachTarget):
        pass

    env = sims.make_env("reach_target_copy_for_test", obs_mode="state")
    assert env.reset(seed=0)[1]["task_name"] == "reach_target_copy_for_test"
