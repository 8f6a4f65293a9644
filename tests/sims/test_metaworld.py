"""Meta-World MT10 tasks behind the contract: specs, spaces, seeding, action mapping, success, experts, the extra."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("metaworld")

import sims
from sims.metaworld_env import STATE_DIM, SUBSTEPS
from vla_rft.contract import ContractError, validate_observation
from vla_rft.errors import UserInputError

MT10 = ["metaworld_button_press_topdown", "metaworld_door_open", "metaworld_drawer_close", "metaworld_drawer_open",
        "metaworld_peg_insert_side", "metaworld_pick_place", "metaworld_push", "metaworld_reach",
        "metaworld_window_close", "metaworld_window_open"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reach() -> Iterator[gym.Env]:
    env = sims.make_env("metaworld_reach", obs_mode="state", reward_type="sparse")
    yield env
    env.close()


def run_expert(env: gym.Env, task: str, seed: int) -> bool:
    expert = sims.make_expert(task, env)
    obs, _ = env.reset(seed=seed)
    while True:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            return bool(info["is_success"])


def test_mt10_registered_with_specs_and_gym_ids() -> None:
    specs = {s.name: s for s in sims.list_tasks() if s.family == "metaworld"}
    assert sorted(specs) == MT10
    assert specs["metaworld_pick_place"].gym_id == "vla_rft/MetaworldPickPlace-v0"
    for spec in specs.values():
        assert spec.gym_id in gym.registry and spec.state_dim == STATE_DIM == 39 and spec.action_dim == 7
        assert spec.max_episode_steps == 125 and len(spec.instructions) >= 3
    assert specs["metaworld_reach"].instructions[0] == "reach the goal position"


def test_rgb_observation_follows_the_contract() -> None:
    env = sims.make_env("metaworld_push", obs_mode="rgb", image_size=32, reward_type="dense")
    obs, info = env.reset(seed=0)
    validate_observation(obs, cameras=["front", "wrist"], state_dim=STATE_DIM)
    assert env.observation_space.contains(obs) and info["is_success"] is False
    assert obs["observation.images.front"].shape == (32, 32, 3) and obs["observation.images.front"].std() > 5
    assert obs["task"] in sims.registry.get_task_class("metaworld_push").templates
    obs, reward, *_, info = env.step(np.zeros(7, np.float32))
    assert env.observation_space.contains(obs) and 0.0 <= reward == info["reward_dense"] <= 1.0
    assert set(info) == {"is_success", "task_name", "reward_sparse", "reward_dense", "action_clipped",
                         "action_clipped_total", "elapsed_steps"}
    assert env.render() is None
    env.close()


def test_seeded_reset_samples_the_goal_deterministically(reach: gym.Env) -> None:
    first = reach.reset(seed=7)[0]["observation.state"]
    reach.step(np.ones(7, np.float32))
    again = reach.reset(seed=7)[0]["observation.state"]
    other = reach.reset(seed=8)[0]["observation.state"]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[36:39], other[36:39])  # a fresh goal per seed
    assert np.all(first[36:39] != 0)  # the goal is observable (the MT benchmarks' setting)


def test_action_moves_the_hand_in_metaworld_units(reach: gym.Env) -> None:
    """One unit is Meta-World's 1 cm per step, held for the control step's 4 steps."""
    reach.reset(seed=0)
    push_x = np.array([0.5, 0, 0, 0.7, -0.3, 0.2, -1], np.float32)  # the rotation entries are ignored
    positions = [reach.step(push_x)[0]["observation.state"][0:3] for _ in range(5)]
    step = np.diff(positions[1:], axis=0).mean(axis=0)
    assert 0.7 * 0.5 * 0.01 * SUBSTEPS < step[0] < 1.2 * 0.5 * 0.01 * SUBSTEPS
    assert np.all(np.abs(step[1:]) < 0.003)


def test_bad_actions_raise_and_out_of_range_is_clipped(reach: gym.Env) -> None:
    reach.reset(seed=0)
    for bad in (np.zeros(4), np.full(7, np.inf)):
        with pytest.raises(ContractError):
            reach.step(bad)
    *_, info = reach.step(np.array([3, 0, 0, 0, 0, 0, -2], np.float32))
    assert info["action_clipped"] == 2 and info["action_clipped_total"] == 2


def test_success_is_metaworlds_own_flag(reach: gym.Env, monkeypatch: pytest.MonkeyPatch) -> None:
    reach.reset(seed=1)
    for _ in range(5):  # doing nothing never reaches the goal
        _, reward, terminated, _, info = reach.step(np.zeros(7, np.float32))
        assert not terminated and reward == 0.0 and info["is_success"] is False
    mw = reach.unwrapped._mw
    evaluate = mw.evaluate_state
    monkeypatch.setattr(mw, "evaluate_state", lambda obs, a: (evaluate(obs, a)[0], {"success": 1.0}))
    _, reward, terminated, _, info = reach.step(np.zeros(7, np.float32))
    assert terminated and reward == 1.0 and info["is_success"] is True


@pytest.mark.parametrize("task", ["metaworld_reach", "metaworld_push", "metaworld_drawer_open", "metaworld_door_open"])
def test_metaworld_scripted_policies_are_the_experts(task: str) -> None:
    """Meta-World's own policies solved these 50/50 over seeds 0..49 (measured); three seeds here."""
    env = sims.make_env(task, obs_mode="state")
    assert all(run_expert(env, task, seed) for seed in range(100, 103))
    env.close()


def test_vector_env_and_bad_kwargs() -> None:
    vec = sims.make_vec_env("metaworld_reach", 2, obs_mode="state")
    obs, _ = vec.reset(seed=[3, 4])
    assert obs["observation.state"].shape == (2, STATE_DIM)
    vec.step(np.zeros((2, 7), np.float32))
    vec.close()
    with pytest.raises(UserInputError, match="perturbation"):
        sims.make_env("metaworld_reach", obs_mode="state", perturbation="visual")


def test_missing_metaworld_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['metaworld'] = None\n"
        "import sims\n"
        "assert 'metaworld_reach' in [s.name for s in sims.list_tasks()]\n"
        "try:\n"
        "    sims.make_env('metaworld_reach', obs_mode='state')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("UserInputError") and "pip install 'vla-rft[metaworld]'" in out.stdout


def test_no_library_warnings_reach_the_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    """Meta-World's gymnasium space warnings stay off the user's terminal."""
    env = sims.make_env("metaworld_pick_place", obs_mode="state")
    env.reset(seed=0)
    env.step(np.zeros(7, np.float32))
    env.close()
    out, err = capfd.readouterr()
    assert "warn" not in (out + err).lower()


def test_potential_reward_telescopes_to_the_dense_one() -> None:
    """``potential`` pays gamma * phi(s') - phi(s) (+ success) with phi the dense reward: with
    gamma = 1 an episode's rewards sum to phi(last) - phi(first) + successes."""
    kw = {"obs_mode": "state", "terminate_on_success": False}
    pot = sims.make_env("metaworld_reach", reward_type="potential", potential_gamma=1.0, **kw)
    dense = sims.make_env("metaworld_reach", reward_type="dense", **kw)
    pot.reset(seed=3), dense.reset(seed=3)
    phi0 = pot.unwrapped._phi
    rng = np.random.default_rng(0)
    total, last, wins = 0.0, 0.0, 0
    for _ in range(6):
        a = rng.uniform(-1, 1, 7).astype(np.float32)
        _, r, *_, info = pot.step(a)
        _, last, *_ = dense.step(a)
        total, wins = total + r, wins + int(info["is_success"])
    assert 0.0 < phi0 < 1.0 and total == pytest.approx(last - phi0 + wins)
    with pytest.raises(UserInputError, match="potential_gamma"):
        sims.make_env("metaworld_reach", reward_type="potential", potential_gamma=1.5)
    pot.close(), dense.close()
