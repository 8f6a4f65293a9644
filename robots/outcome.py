"""Outcome sources of the deploy loop: per-step reward and success, and an episode's verdict."""

from __future__ import annotations

from typing import Any, Protocol

from robots.teleop import KeyboardTeleop


class OutcomeSource(Protocol):
    """Per-step reward and success, and the episode's final verdict when known."""

    def step(self) -> tuple[float, bool]: ...

    def verdict(self) -> bool | None: ...


class RobotOutcome:
    """The robot knows (a simulated robot's task predicate): ``robot.outcome()``."""

    def __init__(self, robot: Any) -> None:
        self.robot = robot
        self._success = False

    def step(self) -> tuple[float, bool]:
        out = self.robot.outcome()
        self._success = bool(out.success)
        return float(out.reward), self._success

    def verdict(self) -> bool | None:
        return None


class TopicOutcome:
    """A ROS ``std_msgs/Bool`` success topic through the robot's bridge (reward 1 on success)."""

    def __init__(self, bridge: Any, topic: str, msg_type: str = "std_msgs/msg/Bool",
                 max_age_s: float = 1.0) -> None:
        self.bridge, self.topic, self.max_age_s = bridge, topic, max_age_s
        bridge.subscribe(topic, msg_type)

    def step(self) -> tuple[float, bool]:
        cached = self.bridge.latest(self.topic)
        ok = cached is not None and cached.age <= self.max_age_s and bool(cached.msg.get("data"))
        return float(ok), ok

    def verdict(self) -> bool | None:
        return None


class OperatorOutcome:
    """The operator says at the end (keyboard ``s``/``f``); unknown until then (reward 0)."""

    def __init__(self, keyboard: KeyboardTeleop) -> None:
        self.keyboard = keyboard

    def step(self) -> tuple[float, bool]:
        return 0.0, False

    def verdict(self) -> bool | None:
        return self.keyboard.verdict


class FixedOutcome:
    """Nobody knows: every frame has reward 0 and success ``value`` (a flag given up front)."""

    def __init__(self, value: bool = False) -> None:
        self.value = value

    def step(self) -> tuple[float, bool]:
        return float(self.value), self.value

    def verdict(self) -> bool | None:
        return self.value
