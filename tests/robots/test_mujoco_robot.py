"""The sims arm behind the Robot interface: config, seeding, holds, e-stop, expert success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robots.base import STAMP_KEY, RobotError, load_robot_config, make_robot
from robots.config import ConfigError
from robots.deploy import DeploySettings, EpisodeRunner, RobotOutcome, resolve_policy
from robots.executor import ExecutorConfig
from robots.mujoco_robot import MujocoRobot, MujocoRobotConfig
from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "robots" / "mujoco_arm.yaml"


@pytest.fixture
def robot():
    r = make_robot(CONFIG)
    yield r
    r.close()


def test_yaml_builds_a_mujoco_robot_with_contract_observations(robot: MujocoRobot) -> None:
    assert isinstance(robot, MujocoRobot)
    obs = robot.get_observation()
    assert obs[STATE_KEY].shape == (14,) and obs[STATE_KEY].dtype == np.float32
    assert obs[IMAGE_PREFIX + "front"].shape == (64, 64, 3)
    assert isinstance(obs[TASK_KEY], str) and obs[TASK_KEY]
    assert robot.limits.action_space == "ee_delta" and robot.limits.action_dim == 7


def test_config_rejects_other_rates_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="control_hz must be 10"):
        MujocoRobotConfig(kind="mujoco", control_hz=20.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: mujoco\ntaks: reach_target\n")
    with pytest.raises(ConfigError, match="did you mean 'task'"):
        load_robot_config(bad)


def test_episodes_are_seeded_in_order() -> None:
    a, b = (MujocoRobot(MujocoRobotConfig(kind="mujoco", cameras=[], seed=5)) for _ in range(2))
    try:
        assert np.array_equal(a.env.privileged_state()["target"], b.env.privileged_state()["target"])
        first = a.env.privileged_state()["target"].copy()
        a.reset()
        assert not np.array_equal(a.env.privileged_state()["target"], first)
        assert a.episodes == 2
    finally:
        a.close()
        b.close()


def test_hold_freezes_the_arm_and_time_moves_only_with_actions(robot: MujocoRobot) -> None:
    robot.send_action(np.array([1, 0, 0, 0, 0, 0, -1], np.float32))
    robot.hold()
    before = robot.get_observation()
    after = robot.get_observation()
    assert np.array_equal(before[STATE_KEY], after[STATE_KEY])
    assert after[STAMP_KEY] >= before[STAMP_KEY]
    arm = robot.env.physics.arm
    assert np.allclose(robot.env.physics.data.ctrl[arm.arm_act], robot.env.physics.data.qpos[arm.qpos])
    robot.send_action(np.zeros(7, np.float32))
    assert robot.env.elapsed_steps == 2


def test_estop_refuses_motion_until_reset(robot: MujocoRobot) -> None:
    robot.estop()
    with pytest.raises(RobotError, match="e-stopped"):
        robot.send_action(np.zeros(7, np.float32))
    robot.reset()
    robot.send_action(np.zeros(7, np.float32))


def test_scripted_expert_succeeds_through_the_safety_filter(robot: MujocoRobot) -> None:
    policy = resolve_policy("scripted:expert", robot, robot.get_observation())
    runner = EpisodeRunner(robot, policy.infer, DeploySettings(
        max_steps=60, realtime=False, executor=ExecutorConfig(async_inference=False)),
        outcome=RobotOutcome(robot))
    results = [runner.run_episode() for _ in range(2)]
    assert all(r.success for r in results), results
    assert all(r.holds == 0 and r.steps < 60 for r in results)
    assert robot.outcome().success


def test_importing_the_module_stays_light() -> None:
    code = ("import sys, robots.mujoco_robot\n"
            "heavy = [m for m in ('mujoco', 'sims', 'gymnasium', 'torch') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
