"""Human intervention sources of the deploy loop (ConRFT-style operator corrections).

An operator's action replaces the policy's for a step (it is still safety-filtered, and the frame
is flagged ``intervention``); ``None`` lets the policy act.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import IO, Any, ClassVar, Protocol

import numpy as np

from robots.base import Robot
from vla_rft.contract import STATE_KEY


class Teleop(Protocol):
    """An operator's action source: an action replaces the policy's (and is flagged), None does not."""

    def action(self, obs: dict[str, Any] | None, step: int) -> np.ndarray | None: ...

    def close(self) -> None: ...


class NoTeleop:
    """No operator: the policy always acts."""

    def action(self, obs: dict[str, Any] | None, step: int) -> np.ndarray | None:
        return None

    def close(self) -> None:
        pass


class ScriptedTeleop:
    """A scripted supervisor (tests, replays): ``fn(step, obs)`` returns an action or None."""

    def __init__(self, fn: Callable[[int, dict[str, Any] | None], np.ndarray | None]) -> None:
        self.fn = fn

    def action(self, obs: dict[str, Any] | None, step: int) -> np.ndarray | None:
        a = self.fn(step, obs)
        return None if a is None else np.asarray(a, dtype=np.float32)

    def close(self) -> None:
        pass


class KeyboardTeleop:
    """Line commands from a stream (the terminal's stdin), read on a thread: the loop never blocks.

    Commands (a letter, then Enter): ``i`` toggles the intervention; while it is on, an
    ``ee_delta`` robot moves with the current jog (``x+ x- y+ y- z+ z-``, ``0`` stops) and a
    ``joint_position`` robot holds the pose it had when the intervention began; ``g`` toggles the
    gripper. ``s``/``f`` mark the episode a success/failure and end it; ``q`` ends the run after
    this episode.
    """

    JOG: ClassVar[dict[str, tuple[int, float]]] = {
        "x+": (0, 1.0), "x-": (0, -1.0), "y+": (1, 1.0), "y-": (1, -1.0), "z+": (2, 1.0), "z-": (2, -1.0)}

    def __init__(self, robot: Robot, stream: IO[str], jog_speed: float = 0.5) -> None:
        self.robot = robot
        self.jog_speed = jog_speed
        self.active = False
        self.verdict: bool | None = None
        """True/False once the operator marked the episode (``s``/``f``); reset per episode."""
        self.quit = False
        self._gripper = robot.limits.gripper_min
        self._jog = np.zeros(3)
        self._frozen: np.ndarray | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), name="teleop-stdin", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.strip().lower())

    def new_episode(self) -> None:
        self.active, self.verdict, self._frozen = False, None, None
        self._jog[:] = 0.0

    def _handle(self, cmd: str) -> None:
        if cmd == "i":
            self.active, self._frozen = not self.active, None
            self._jog[:] = 0.0
        elif cmd == "g":
            lim = self.robot.limits
            self._gripper = lim.gripper_max if self._gripper <= lim.gripper_min else lim.gripper_min
        elif cmd in ("s", "f"):
            self.verdict = cmd == "s"
        elif cmd == "q":
            self.quit = True
        elif cmd == "0":
            self._jog[:] = 0.0
        elif cmd in self.JOG:
            axis, sign = self.JOG[cmd]
            self._jog[axis] = sign * self.jog_speed

    def action(self, obs: dict[str, Any] | None, step: int) -> np.ndarray | None:
        while not self._lines.empty():
            self._handle(self._lines.get_nowait())
        if not self.active or obs is None:
            return None
        lim = self.robot.limits
        if lim.action_space == "ee_delta":
            return np.concatenate([self._jog, np.zeros(3), [self._gripper]]).astype(np.float32)
        if self._frozen is None:
            self._frozen = np.asarray(self.robot.state_layout.joints(np.asarray(obs[STATE_KEY])), np.float32)
        tail = [self._gripper] if lim.has_gripper else []
        return np.concatenate([self._frozen, tail]).astype(np.float32)

    def close(self) -> None:
        pass  # the reader is a daemon thread blocked on the stream; it ends with the process


class RosTeleop:
    """Operator actions from a ROS topic (``std_msgs/Float64MultiArray``) through the robot's bridge.

    The operator intervenes while messages keep arriving: an action older than ``timeout_s`` is
    no longer an intervention, so a teleop device that stops publishing hands control back.
    """

    def __init__(self, bridge: Any, topic: str, action_dim: int, timeout_s: float = 0.3,
                 msg_type: str = "std_msgs/msg/Float64MultiArray") -> None:
        self.bridge, self.topic, self.action_dim, self.timeout_s = bridge, topic, action_dim, timeout_s
        bridge.subscribe(topic, msg_type)

    def action(self, obs: dict[str, Any] | None, step: int) -> np.ndarray | None:
        cached = self.bridge.latest(self.topic)
        if cached is None or cached.age > self.timeout_s:
            return None
        data = cached.msg.get("data")
        if not isinstance(data, list) or len(data) != self.action_dim:
            return None
        return np.asarray(data, dtype=np.float32)

    def close(self) -> None:
        self.bridge.unsubscribe(self.topic)
