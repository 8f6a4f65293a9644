"""A kinematic robot with no hardware: for dry runs of the deploy loop and for tests.

It integrates commands directly (joint positions, or EE position for ``ee_delta``), stamps its
observations with the current monotonic time, and logs every call, so the safety filter,
executor and server can be exercised end to end without a simulator. Fault injection
(``freeze_sensors``, ``block_observations``) lets tests make the sensors go stale or silent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robots.base import STAMP_KEY, Robot, RobotConfig, RobotLimits, StateLayout, register_robot
from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY


def _default_limits() -> RobotLimits:
    return RobotLimits(action_space="joint_position", joint_pos_min=[-2.0] * 6,
                       joint_pos_max=[2.0] * 6, joint_vel_max=[1.0] * 6, joint_acc_max=[4.0] * 6)


@dataclass
class FakeRobotConfig(RobotConfig):
    """A kinematic arm; state is ``[joints..., gripper]`` or, for ``ee_delta``, ``[x, y, z, gripper]``."""

    limits: RobotLimits = field(default_factory=_default_limits)
    """Hard limits (default: a 6-joint arm, +-2 rad, 1 rad/s, 4 rad/s^2)."""
    state_layout: StateLayout = field(default_factory=lambda: StateLayout([0, 6], 6, None))
    """Must match the state the fake builds (see the class docstring)."""
    initial: list[float] = field(default_factory=list)
    """Initial joint positions (or EE position for ``ee_delta``); empty means zeros / box centre."""
    image_shape: list[int] = field(default_factory=lambda: [48, 64])
    """Height and width of the synthetic camera images."""
    task: str = "hold still"
    """The language instruction put in each observation."""


@register_robot("fake")
class FakeRobot(Robot):
    """A kinematic stand-in that follows every command exactly."""

    config_class = FakeRobotConfig

    def __init__(self, config: FakeRobotConfig) -> None:
        super().__init__(config)
        self.config: FakeRobotConfig = config
        lim = config.limits
        if lim.action_space == "ee_delta":
            centre = (np.array(lim.ee_workspace_min) + np.array(lim.ee_workspace_max)) / 2
            self.position = np.array(config.initial or centre, dtype=np.float64)
        else:
            self.position = np.array(config.initial or np.zeros(lim.n_joints), dtype=np.float64)
        self.gripper = lim.gripper_min
        self.commands: list[np.ndarray] = []
        self.calls: list[tuple[float, str]] = []
        self.freeze_sensors = False
        self.block_observations = threading.Event()
        self._unblock = threading.Event()
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def get_observation(self) -> dict[str, Any]:
        if self.block_observations.is_set():
            self._unblock.wait()
        with self._lock:
            if not self.freeze_sensors:
                self._stamp = time.monotonic()
            state = np.append(self.position, self.gripper).astype(np.float32)
            h, w = self.config.image_shape
            obs: dict[str, Any] = {STATE_KEY: state, TASK_KEY: self.config.task, STAMP_KEY: self._stamp}
            for cam in self.config.cameras:
                obs[IMAGE_PREFIX + cam] = np.full((h, w, 3), len(self.commands) % 256, np.uint8)
            return obs

    def release_observations(self) -> None:
        """Unblock a ``get_observation`` held by ``block_observations``."""
        self.block_observations.clear()
        self._unblock.set()

    def send_action(self, action: np.ndarray) -> None:
        a = np.asarray(action, dtype=np.float64)
        with self._lock:
            self.commands.append(a.copy())
            self.calls.append((time.monotonic(), "send_action"))
            if self.limits.action_space == "ee_delta":
                self.position = self.position + a[:3] * self.limits.ee_pos_scale
            else:
                self.position = a[: self.limits.n_joints].copy()
            if self.limits.has_gripper:
                self.gripper = float(a[-1])

    def hold(self) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), "hold"))

    def estop(self) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), "estop"))

    def home(self) -> None:
        with self._lock:
            self.calls.append((time.monotonic(), "home"))
            if self.config.home:
                self.position = np.array(self.config.home, dtype=np.float64)

    def close(self) -> None:
        self.hold()
        self.release_observations()

    def call_times(self, name: str) -> list[float]:
        """Monotonic times of each call of ``name`` (``send_action``, ``hold``, ``estop``, ``home``)."""
        with self._lock:
            return [t for t, n in self.calls if n == name]
