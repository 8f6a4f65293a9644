"""robosuite tasks behind the contract: spaces, seeding, action mapping, success, experts, the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("robosuite")

import sims
from sims.robosuite_env import STATE_DIM
from vla_rft.contract import ACTION_POS_SCALE, ContractError, validate_observation
from vla_rft.errors import UserInputError

ROBOSUITE_TASKS = ["robosuite_door", "robosuite_lift", "robosuite_pick_place_can", "robosuite_stack"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lift() -> Iterator[gym.Env]:
    """One state-only Lift env shared by the tests (building one takes seconds)."""
    env = sims.make_env("robosuite_lift", obs_mode="state", reward_type="sparse")
    yield env
    env.close()


def run_expert(env: gym.Env, task: str, seed: int) -> bool:
    expert = sims.make_expert(task, env)
    obs, _ = env.reset(seed=seed)
    while True:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            return bool(info["is_success"])


def test_registered_with_specs_and_gym_ids() -> None:
    specs = {s.name: s for s in sims.list_tasks() if s.family == "robosuite"}
    assert sorted(specs) == ROBOSUITE_TASKS
    assert specs["robosuite_lift"].gym_id == "vla_rft/RobosuiteLift-v0"
    for spec in specs.values():
        assert spec.gym_id in gym.registry and spec.state_dim == STATE_DIM == 15 and spec.action_dim == 7
        assert len(spec.instructions) >= 3 and all("{" not in i for i in spec.instructions)


def test_rgb_observation_follows_the_contract() -> None:
    env = sims.make_env("robosuite_lift", obs_mode="rgb", image_size=32, reward_type="dense")
    obs, info = env.reset(seed=0)
    validate_observation(obs, cameras=["front", "wrist"], state_dim=STATE_DIM)
    assert env.observation_space.contains(obs)
    assert obs["observation.images.front"].shape == (32, 32, 3) and obs["observation.state"].dtype == np.float32
    assert obs["task"] in sims.registry.get_task_class("robosuite_lift").templates
    assert np.linalg.norm(obs["observation.state"][11:15]) == pytest.approx(1.0, abs=1e-4)
    assert env.action_space.shape == (7,) and info["is_success"] is False
    obs, reward, *_, info = env.step(np.zeros(7, np.float32))
    assert env.observation_space.contains(obs) and 0.0 <= reward == info["reward_dense"] <= 1.0
    assert set(info) == {"is_success", "task_name", "reward_sparse", "reward_dense", "action_clipped",
                         "action_clipped_total", "elapsed_steps"}
    env.close()
    only_wrist = sims.make_env("robosuite_lift", cameras=["wrist"], image_size=32)
    assert sorted(only_wrist.reset(seed=0)[0]) == ["observation.images.wrist", "observation.state", "task"]
    only_wrist.close()


def test_seeded_reset_is_deterministic(lift: gym.Env) -> None:
    first = lift.reset(seed=7)[0]["observation.state"], lift.unwrapped.privileged_state()["cube"]
    lift.step(np.ones(7, np.float32))
    again = lift.reset(seed=7)[0]["observation.state"], lift.unwrapped.privileged_state()["cube"]
    other = lift.reset(seed=8)[0]["observation.state"], lift.unwrapped.privileged_state()["cube"]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[1], other[1])


def test_action_moves_the_gripper_by_the_contract_scale(lift: gym.Env) -> None:
    lift.reset(seed=0)
    push_x = np.array([1, 0, 0, 0, 0, 0, -1], np.float32)
    positions = [lift.step(push_x)[0]["observation.state"][8:11] for _ in range(6)]
    step = np.diff(positions[2:], axis=0).mean(axis=0)  # after the arm has sped up
    assert 0.5 * ACTION_POS_SCALE < step[0] < 1.5 * ACTION_POS_SCALE
    assert np.all(np.abs(step[1:]) < 0.2 * ACTION_POS_SCALE)
    assert lift.unwrapped.privileged_state()["gripper"] < 0.1
    close = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)
    for _ in range(3):
        obs = lift.step(close)[0]
    assert obs["observation.state"][7] > 0.9


def test_bad_actions_raise_and_out_of_range_is_clipped(lift: gym.Env) -> None:
    lift.reset(seed=0)
    for bad in (np.zeros(6), np.zeros((1, 7)), np.full(7, np.nan)):
        with pytest.raises(ContractError):
            lift.step(bad)
    *_, info = lift.step(np.array([2, 0, 0, 0, 0, 0, -3], np.float32))
    assert info["action_clipped"] == 2 and info["action_clipped_total"] == 2


def test_success_is_robosuites_check(lift: gym.Env, monkeypatch: pytest.MonkeyPatch) -> None:
    lift.reset(seed=1)
    for _ in range(30):  # doing nothing never lifts the cube
        _, reward, terminated, _, info = lift.step(np.zeros(7, np.float32))
        assert not terminated and reward == 0.0 and info["is_success"] is False
    monkeypatch.setattr(lift.unwrapped._env, "_check_success", lambda: True)
    _, reward, terminated, _, info = lift.step(np.zeros(7, np.float32))
    assert terminated and reward == 1.0 and info["is_success"] is True and info["reward_dense"] == 1.0


@pytest.mark.parametrize("task", ["robosuite_lift", "robosuite_stack"])
def test_expert_succeeds(task: str) -> None:
    """Over 20 seeds both experts succeeded every time (measured); five keep the test quick."""
    env = sims.make_env(task, obs_mode="state")
    successes = sum(run_expert(env, task, seed) for seed in range(100, 105))
    env.close()
    assert successes >= 4


@pytest.mark.parametrize("task", ["robosuite_pick_place_can", "robosuite_door"])
def test_other_tasks_run_with_privileged_state(task: str) -> None:
    env = sims.make_env(task, obs_mode="state", reward_type="dense")
    obs, _ = env.reset(seed=0)
    priv = env.unwrapped.privileged_state()
    assert {"ee_pos", "ee_quat", "gripper", "step"} <= set(priv)
    assert ("can" in priv and "goal" in priv) if task.endswith("can") else ("handle" in priv)
    obs, reward, terminated, *_ = env.step(np.zeros(7, np.float32))
    assert obs["observation.state"].shape == (STATE_DIM,) and 0.0 <= reward <= 1.0 and not terminated
    env.close()


def test_vector_env_and_bad_kwargs() -> None:
    vec = sims.make_vec_env("robosuite_lift", 2, obs_mode="state")
    obs, _ = vec.reset(seed=[3, 4])
    assert obs["observation.state"].shape == (2, STATE_DIM)
    vec.step(np.zeros((2, 7), np.float32))
    vec.close()
    with pytest.raises(UserInputError, match="perturbation"):
        sims.make_env("robosuite_lift", obs_mode="state", perturbation="visual")


def test_missing_robosuite_names_the_extra() -> None:
    """Without robosuite, ``import sims`` and ``list_tasks`` work and building a robosuite task
    raises an error that says what to install (a fresh interpreter, robosuite blocked)."""
    code = (
        "import sys; sys.modules['robosuite'] = None\n"
        "import sims\n"
        "assert 'robosuite_lift' in [s.name for s in sims.list_tasks()]\n"
        "try:\n"
        "    sims.make_env('robosuite_lift', obs_mode='state')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("UserInputError") and "pip install 'vla-rft[robosuite]'" in out.stdout


def test_potential_reward_telescopes_to_the_dense_one() -> None:
    """``potential`` pays gamma * phi(s') - phi(s) (+ success) with phi robosuite's dense reward."""
    env = sims.make_env("robosuite_lift", obs_mode="state", reward_type="potential", potential_gamma=1.0)
    env.reset(seed=2)
    phi0, total, rng = env.unwrapped._phi, 0.0, np.random.default_rng(0)
    for _ in range(5):
        _, r, *_, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        total += r
    assert 0.0 <= phi0 < 1.0 and total == pytest.approx(info["reward_dense"] - phi0 + float(info["is_success"]))
    env.close()


def test_robosuite_logs_go_to_the_run_log_not_the_terminal(tmp_path: Path) -> None:
    """robosuite's controller-config and macro-file warnings (its own console handler) reach the
    run's warnings.log; the terminal stays clean. Errors would still print."""
    log = tmp_path / "warnings.log"
    code = (
        "import sims; from vla_rft.run import warning_log;"
        f"warning_log.attach(__import__('pathlib').Path({str(log)!r}));"
        "env = sims.make_env('robosuite_lift', obs_mode='state'); env.reset(seed=0); env.close()"
    )
    env = {**os.environ, "VLA_RFT_WARNINGS": ""}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "robosuite" not in out.stderr and "robosuite" not in out.stdout
    text = log.read_text()
    assert "robosuite_logs WARNING" in text and "controller" in text
