"""Robot configs: strict YAML loading, did-you-mean errors, the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

import robots
from robots.base import Robot, RobotConfig, RobotLimits, robot_config_from_dict
from robots.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _fake_dict(**extra: object) -> dict:
    return {"kind": "fake", "name": "f", **extra}


def test_every_shipped_robot_config_loads() -> None:
    paths = sorted((REPO / "configs" / "robots").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = robots.load_robot_config(path)
        assert cfg.limits.action_dim > 0


def test_unknown_top_level_key_names_it_with_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'control_hzz'.*did you mean 'control_hz'"):
        robot_config_from_dict(_fake_dict(control_hzz=10.0))


def test_unknown_nested_key_names_its_path() -> None:
    limits = {"joint_pos_min": [0.0], "joint_pos_max": [1.0], "joint_vel_max": [1.0],
              "joint_acc_max": [1.0], "joint_vel_maxx": [2.0]}
    with pytest.raises(ConfigError, match=r"robot.limits: unknown key 'joint_vel_maxx'.*'joint_vel_max'"):
        robot_config_from_dict(_fake_dict(limits=limits))


def test_unknown_kind_suggests_a_registered_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fake'"):
        robot_config_from_dict({"kind": "fak"})


def test_type_errors_and_inconsistent_limits_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="control_hz: expected a number"):
        robot_config_from_dict(_fake_dict(control_hz="fast"))
    bad = {"joint_pos_min": [0.0, 0.0], "joint_pos_max": [1.0], "joint_vel_max": [1.0],
           "joint_acc_max": [1.0]}
    with pytest.raises(ConfigError, match="joint_pos_max has 1 entries"):
        robot_config_from_dict(_fake_dict(limits=bad))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_fake_dict(limits={"action_space": "ee_deltaa"})))
    with pytest.raises(ConfigError, match="did you mean 'ee_delta'"):
        robots.load_robot_config(path)


def test_action_dim_follows_the_action_space() -> None:
    assert RobotLimits(action_space="ee_delta").action_dim == 7
    lim = RobotLimits(joint_pos_min=[0.0] * 6, joint_pos_max=[1.0] * 6, joint_vel_max=[1.0] * 6,
                      joint_acc_max=[1.0] * 6, has_gripper=False)
    assert lim.action_dim == 6


def test_outside_code_can_register_a_robot_kind() -> None:
    @dataclass
    class EchoConfig(RobotConfig):
        echo: float = 0.5
        """A value the robot reports back."""

    @robots.register_robot("echo-test")
    class Echo(Robot):
        config_class = EchoConfig

        def get_observation(self) -> dict:
            return {"observation.state": np.full(3, self.config.echo, np.float32)}

        def send_action(self, action: np.ndarray) -> None: ...
        def hold(self) -> None: ...
        def estop(self) -> None: ...
        def home(self) -> None: ...
        def close(self) -> None: ...

    robot = robots.make_robot({"kind": "echo-test", "echo": 2.0})
    assert isinstance(robot, Echo)
    assert robot.get_observation()["observation.state"][0] == 2.0
    assert "echo-test" in robots.available_robots()
    with pytest.raises(ConfigError, match="did you mean 'echo'"):
        robots.make_robot({"kind": "echo-test", "ecko": 1.0})


def test_the_sims_arm_refuses_an_action_scale_its_controller_does_not_use() -> None:
    with pytest.raises(ConfigError, match="ee_pos_scale/ee_rot_scale must be 0.02/0.15 for the sims arm"):
        robot_config_from_dict({"kind": "mujoco", "limits": {"action_space": "ee_delta", "ee_pos_scale": 0.05}})
