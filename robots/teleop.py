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
    """An operator's action source: an action replaces the policy's (and is flagged), None does not.

    A source with a ``new_episode()`` method has it called before every episode.
    """

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


class ExpertSupervisor:
    """A scripted supervisor for simulated robots (HG-DAgger / ConRFT-style corrections).

    It watches the task's dense reward (``robot.outcome()``) and takes over with the task's
    scripted expert when the policy has made no progress (a reward gain of ``min_progress``) for
    ``stall_steps`` steps; after ``takeover_steps`` steps it hands control back and the stall
    clock restarts.
    Each takeover starts a fresh expert from the current state, so the corrections are the
    expert's actions on the states the policy reached: the data offline RFT learns from.
    """

    def __init__(self, robot: Any, stall_steps: int = 20, takeover_steps: int = 15,
                 min_progress: float = 0.02) -> None:
        if getattr(robot, "make_expert", None) is None or getattr(robot, "outcome", None) is None:
            raise ValueError("the expert supervisor needs a simulated robot (a task expert and its reward)")
        if stall_steps < 1 or takeover_steps < 1:
            raise ValueError(f"stall_steps and takeover_steps must be >= 1, got {stall_steps}, {takeover_steps}")
        self.robot = robot
        self.stall_steps, self.takeover_steps = stall_steps, takeover_steps
        self.min_progress = min_progress
        self.takeovers = 0
        self.new_episode()

    def new_episode(self) -> None:
        self._best, self._since, self._left = -float("inf"), 0, 0
        self._expert: Callable[[Any], np.ndarray] | None = None

    def action(self, obs: dict[str, Any] | None, step: int) -> np.ndarray | None:
        if obs is None:
            return None
        reward = float(self.robot.outcome().reward)
        if reward > self._best + self.min_progress:
            self._best, self._since = reward, step
        if self._left == 0 and step - self._since >= self.stall_steps:
            self._left = self.takeover_steps
            self._expert = self.robot.make_expert()
            self.takeovers += 1
        if self._left == 0 or self._expert is None:
            return None
        self._left -= 1
        if self._left == 0:
            self._since = step + 1  # handed back: the policy gets a fresh stall window
        return np.asarray(self._expert(obs), dtype=np.float32)

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
