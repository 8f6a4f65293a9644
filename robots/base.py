"""The robot interface, its config and limits, and the registry of robot kinds.

A robot speaks the observation/action contract of :mod:`vla_rft.contract`: ``get_observation``
returns one unbatched contract dict (plus :data:`STAMP_KEY`, the arrival time of its oldest input,
so that the safety filter can refuse to act on stale data); ``send_action`` takes one action that
has already passed the :class:`robots.safety.SafetyFilter`.

Two action spaces exist on real arms, and :class:`RobotLimits` describes both:

- ``ee_delta``: the built-in arm's contract action (EE delta pose + absolute gripper, in [-1, 1]);
- ``joint_position``: absolute joint positions (radians) + gripper, which is what a ROS
  ``JointTrajectory`` or a forward position controller carries.

New kinds register themselves with :func:`register_robot`; built-in kinds whose modules import
heavy libraries (the MuJoCo arm) are imported lazily by :func:`robot_class` so that
``import robots`` stays cheap on a robot computer.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

import numpy as np

from robots.config import ConfigError, did_you_mean, from_mapping, load_yaml
from vla_rft.contract import ARM_ACTION_DIM, STATE_KEY

STAMP_KEY = "observation.stamp"
"""Monotonic time (``time.monotonic()``, seconds) at which the oldest input of an observation arrived."""

ActionSpace = Literal["ee_delta", "joint_position"]


class RobotError(RuntimeError):
    """A robot could not do what was asked (not connected, no data yet, hardware refused)."""


class ObservationUnavailable(RobotError):
    """No complete observation exists yet (a sensor topic has not published)."""


@dataclass
class RobotLimits:
    """Hard limits the safety filter enforces; nothing outside them is ever commanded."""

    action_space: ActionSpace = "joint_position"
    """Which action the robot takes: ``ee_delta`` (contract arm action) or ``joint_position``."""
    joint_pos_min: list[float] = field(default_factory=list)
    """Lower joint position limits (rad), one per arm joint, in the robot's joint order."""
    joint_pos_max: list[float] = field(default_factory=list)
    """Upper joint position limits (rad)."""
    joint_vel_max: list[float] = field(default_factory=list)
    """Maximum joint speed (rad/s); a command may move a joint at most ``vel * dt`` per step."""
    joint_acc_max: list[float] = field(default_factory=list)
    """Maximum joint acceleration (rad/s^2); also sets the braking distance kept from the limits."""
    ee_workspace_min: list[float] = field(default_factory=lambda: [-1.0, -1.0, 0.0])
    """Lower corner (x, y, z metres, base frame) of the box the end effector must stay in."""
    ee_workspace_max: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Upper corner of the end-effector workspace box."""
    ee_vel_max: float = 0.25
    """Maximum end-effector speed per axis (m/s) for ``ee_delta`` actions."""
    ee_acc_max: float = 2.0
    """Maximum end-effector acceleration per axis (m/s^2) for ``ee_delta`` actions."""
    ee_rot_vel_max: float = 1.5
    """Maximum rotation rate per axis-angle component (rad/s) for ``ee_delta`` actions."""
    ee_rot_acc_max: float = 15.0
    """Maximum rotational acceleration per component (rad/s^2) for ``ee_delta`` actions."""
    ee_pos_scale: float = 0.02
    """Metres of end-effector translation per control step that an ``ee_delta`` entry of 1.0
    commands: the filter converts actions to metres with it (default 0.02, the built-in arm's
    ``vla_rft.contract.ACTION_POS_SCALE``)."""
    ee_rot_scale: float = 0.15
    """Radians of rotation per control step that an ``ee_delta`` rotation entry of 1.0 commands
    (default 0.15, the built-in arm's ``vla_rft.contract.ACTION_ROT_SCALE``)."""
    has_gripper: bool = True
    """Whether the action's last entry commands a gripper."""
    gripper_min: float = -1.0
    """Lowest gripper command (contract: -1 fully open)."""
    gripper_max: float = 1.0
    """Highest gripper command (contract: +1 fully closed)."""
    gripper_rate_max: float = 4.0
    """Maximum change of the gripper command per second (units/s)."""

    def __post_init__(self) -> None:
        n = len(self.joint_pos_min)
        for name in ("joint_pos_max", "joint_vel_max", "joint_acc_max"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{name} has {len(getattr(self, name))} entries, joint_pos_min has {n}")
        if self.action_space == "joint_position" and n == 0:
            raise ConfigError("joint_position robots need joint_pos_min/max/vel/acc limits")
        if np.any(np.asarray(self.joint_pos_min) > np.asarray(self.joint_pos_max)):
            raise ConfigError("joint_pos_min must be <= joint_pos_max")
        positive = [*self.joint_vel_max, *self.joint_acc_max, self.ee_vel_max, self.ee_acc_max,
                    self.ee_rot_vel_max, self.ee_rot_acc_max, self.gripper_rate_max]
        if any(not v > 0 for v in positive):
            raise ConfigError("velocity, acceleration and rate limits must be > 0")
        if not (self.ee_pos_scale > 0 and self.ee_rot_scale > 0):
            raise ConfigError(f"ee_pos_scale and ee_rot_scale must be > 0, got {self.ee_pos_scale} "
                              f"and {self.ee_rot_scale}")
        if len(self.ee_workspace_min) != 3 or len(self.ee_workspace_max) != 3:
            raise ConfigError("ee_workspace_min/max need 3 entries (x, y, z)")
        if np.any(np.asarray(self.ee_workspace_min) > np.asarray(self.ee_workspace_max)):
            raise ConfigError("ee_workspace_min must be <= ee_workspace_max")
        if self.gripper_min > self.gripper_max:
            raise ConfigError("gripper_min must be <= gripper_max")

    @property
    def n_joints(self) -> int:
        return len(self.joint_pos_min)

    @property
    def action_dim(self) -> int:
        """``ARM_ACTION_DIM`` for ``ee_delta``; joints (+1 with a gripper) for ``joint_position``."""
        if self.action_space == "ee_delta":
            return ARM_ACTION_DIM
        return self.n_joints + int(self.has_gripper)


@dataclass
class StateLayout:
    """Where measured quantities sit inside ``observation.state`` (index ranges, end exclusive)."""

    joint_positions: list[int] | None = None
    """``[start, stop)`` of the joint positions, or null when the state has none."""
    gripper: int | None = None
    """Index of the measured gripper command/position, or null."""
    ee_position: list[int] | None = None
    """``[start, stop)`` of the end-effector position (3 entries, metres), or null."""

    def joints(self, state: np.ndarray) -> np.ndarray | None:
        return None if self.joint_positions is None else state[slice(*self.joint_positions)]

    def gripper_value(self, state: np.ndarray) -> float | None:
        return None if self.gripper is None else float(state[self.gripper])

    def ee(self, state: np.ndarray) -> np.ndarray | None:
        return None if self.ee_position is None else state[slice(*self.ee_position)]

    @staticmethod
    def read(obs: dict[str, Any]) -> np.ndarray:
        return np.asarray(obs[STATE_KEY], dtype=np.float64)


@dataclass
class RobotConfig:
    """Fields every robot kind shares; kinds subclass it with their own fields."""

    kind: str = ""
    """Registered robot kind (``fake``, ``ros``, ...); selects the config and robot classes."""
    name: str = "robot"
    """Free name used in logs and dataset metadata."""
    control_hz: float = 10.0
    """Control rate: one action per period; velocity/acceleration limits are applied per period."""
    limits: RobotLimits = field(default_factory=lambda: RobotLimits(action_space="ee_delta"))
    """Hard limits enforced by the safety filter."""
    state_layout: StateLayout = field(default_factory=StateLayout)
    """Where joints, gripper and EE position sit inside ``observation.state``."""
    home: list[float] = field(default_factory=list)
    """Home joint positions (rad) used by ``home()``; empty for robots that home themselves."""
    cameras: list[str] = field(default_factory=list)
    """Camera names the robot provides (``observation.images.<name>``)."""

    def __post_init__(self) -> None:
        if not self.control_hz > 0:
            raise ConfigError("control_hz must be > 0")
        lim = self.limits
        if self.home and len(self.home) != lim.n_joints:
            raise ConfigError(f"home has {len(self.home)} entries, the robot has {lim.n_joints} joints")
        if self.home and (np.any(np.asarray(self.home) < np.asarray(lim.joint_pos_min))
                          or np.any(np.asarray(self.home) > np.asarray(lim.joint_pos_max))):
            raise ConfigError("home lies outside the joint position limits")

    @property
    def control_dt(self) -> float:
        return 1.0 / self.control_hz


class Robot(abc.ABC):
    """A robot behind the contract. Implementations are registered with :func:`register_robot`.

    Commands reaching ``send_action``/``send_chunk`` must already be safety-filtered; robots do
    not re-check limits (the filter owns that invariant, and tests it). A command a robot makes
    up itself, which the filter never sees (a hold at the measured pose, a homing path), must be
    kept inside the limits by the robot (see :meth:`robots.ros_robot.RosRobot.hold`).
    """

    config_class: ClassVar[type[RobotConfig]] = RobotConfig

    def __init__(self, config: RobotConfig) -> None:
        self.config = config

    @property
    def limits(self) -> RobotLimits:
        return self.config.limits

    @property
    def state_layout(self) -> StateLayout:
        return self.config.state_layout

    @abc.abstractmethod
    def get_observation(self) -> dict[str, Any]:
        """One unbatched contract observation with :data:`STAMP_KEY`; raises ObservationUnavailable."""

    @abc.abstractmethod
    def send_action(self, action: np.ndarray) -> None:
        """Command one filtered action, to be reached within one control period."""

    def send_chunk(self, chunk: np.ndarray) -> None:
        """Command filtered actions one per control period; robots with trajectories override it.

        This default blocks while it plays the chunk, which suits simulated robots; an arm with a
        trajectory controller sends the whole chunk in one message instead.
        """
        import time

        for action in np.asarray(chunk):
            start = time.monotonic()
            self.send_action(action)
            time.sleep(max(0.0, self.config.control_dt - (time.monotonic() - start)))

    @abc.abstractmethod
    def hold(self) -> None:
        """Stop and keep the current measured pose (safe to call at any time, repeatedly)."""

    @abc.abstractmethod
    def estop(self) -> None:
        """Trigger the robot's emergency stop (hardware/driver level where one exists)."""

    @abc.abstractmethod
    def home(self) -> None:
        """Move slowly to the configured home pose; blocks until there or raises RobotError."""

    def reset(self) -> None:
        """Prepare a new episode; by default this homes the robot."""
        self.home()

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads; the robot is holding afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


R = TypeVar("R", bound=type[Robot])

_REGISTRY: dict[str, type[Robot]] = {}
# Built-in kinds imported on first use, so heavy ones (the MuJoCo arm) cost nothing until asked.
_LAZY_KINDS: dict[str, str] = {"fake": "robots.fake", "ros": "robots.ros_robot",
                               "mujoco": "robots.mujoco_robot"}


def register_robot(kind: str) -> Callable[[R], R]:
    """Class decorator: make ``kind`` buildable from a config with ``kind: <kind>``."""

    def deco(cls: R) -> R:
        if kind in _REGISTRY and _REGISTRY[kind] is not cls:
            raise ValueError(f"robot kind '{kind}' is already registered by {_REGISTRY[kind].__name__}")
        _REGISTRY[kind] = cls
        return cls

    return deco


def available_robots() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY_KINDS))


def robot_class(kind: str) -> type[Robot]:
    """The class registered for ``kind``, importing a built-in module on first use."""
    if kind not in _REGISTRY and kind in _LAZY_KINDS:
        importlib.import_module(_LAZY_KINDS[kind])
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown robot kind '{kind}'{did_you_mean(kind, available_robots())}")
    return _REGISTRY[kind]


def robot_config_from_dict(data: dict[str, Any], where: str = "robot") -> RobotConfig:
    """Build the config class of ``data['kind']``; unknown keys are errors with a did-you-mean."""
    if "kind" not in data:
        raise ConfigError(f"{where}: missing 'kind' (one of {available_robots()})")
    cls = robot_class(str(data["kind"]))
    return from_mapping(cls.config_class, data, where)


def load_robot_config(path: str | Path) -> RobotConfig:
    """Read a robot YAML file (``configs/robots/*.yaml``)."""
    return robot_config_from_dict(load_yaml(path), where=str(path))


def make_robot(config: RobotConfig | dict[str, Any] | str | Path) -> Robot:
    """Instantiate a robot from a config object, a dict, or a YAML path."""
    if isinstance(config, (str, Path)):
        config = load_robot_config(config)
    elif isinstance(config, dict):
        config = robot_config_from_dict(config)
    cls = robot_class(config.kind)
    if not isinstance(config, cls.config_class):
        raise ConfigError(f"robot kind '{config.kind}' needs a {cls.config_class.__name__}, "
                          f"got {type(config).__name__}")
    return cls(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (for logging and dataset metadata)."""
    return dataclasses.asdict(config)
