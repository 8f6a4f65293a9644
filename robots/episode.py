"""One deployed episode: the fixed-rate control loop that runs a policy on a robot.

One control period: read an observation, let the :class:`~robots.executor.ChunkExecutor` pick an
action (the policy's, or an operator's when a :class:`~robots.teleop.Teleop` source intervenes),
pass it through the :class:`~robots.safety.SafetyFilter`, command or hold, and append one frame to
a :class:`~robots.dataset_log.DeployDataset` (see :mod:`robots.dataset_log` for its fields).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from robots.base import ObservationUnavailable, Robot, RobotError
from robots.dataset_log import DeployDataset, _frame_obs, event_flags
from robots.executor import ChunkExecutor, ExecutorConfig, StepRecord
from robots.outcome import FixedOutcome, OutcomeSource
from robots.safety import SafetyConfig, SafetyEvent, SafetyFilter
from robots.teleop import KeyboardTeleop, NoTeleop, Teleop
from robots.timing import LoopStats, RateLoop
from vla_rft.contract import STATE_KEY


# ---------------------------------------------------------------------- the robot's link
class GuardedRobot(Robot):
    """Wraps a robot so that a failed command (link down) becomes a hold instead of an exception.

    A command that cannot be sent must not stop the loop: the arm keeps holding (a trajectory
    controller stops at its last point; the robot is told to hold when the link returns), and the
    step is recorded as held with a ``send_failed`` event and ``bridge_dropped``.
    """

    def __init__(self, inner: Robot) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.send_failed = False
        """Set when the last ``send_action`` failed; the loop clears it every step."""

    def get_observation(self) -> dict[str, Any]:
        return self.inner.get_observation()

    def send_action(self, action: np.ndarray) -> None:
        try:
            self.inner.send_action(action)
        except RobotError:
            self.send_failed = True
            self.hold()

    def hold(self) -> None:
        try:
            self.inner.hold()
        except RobotError:
            pass  # the link is down; the controller holds its last target by itself

    def estop(self) -> None:
        self.inner.estop()

    def home(self) -> None:
        self.inner.home()

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def link(self) -> tuple[bool, int]:
        """``(connected, connection count)`` of the robot's bridge; ``(True, 1)`` without one."""
        bridge = getattr(self.inner, "bridge", None)
        if bridge is None:
            return True, 1
        return bool(bridge.connected), int(bridge.connects)


# ---------------------------------------------------------------------- one episode
@dataclass
class DeploySettings:
    """What the loop needs besides the robot, the policy and the sinks."""

    max_steps: int = 200
    """Upper bound on control steps per episode."""
    end_on_success: bool = True
    """End the episode at the first step whose outcome says success."""
    success_hold_steps: int = 0
    """Extra steps recorded after success before the episode ends (0: end at once)."""
    realtime: bool = True
    """Pace the loop at the robot's control rate; False runs steps back to back (simulated robots)."""
    control_hz: float | None = None
    """Loop rate; null: the robot's ``control_hz``."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """How chunks become per-step actions."""
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    """Safety-filter settings (``control_dt`` is set from the loop rate)."""


@dataclass
class EpisodeResult:
    """Summary of one deployed episode (also the sidecar line of the dataset)."""

    steps: int
    frames: int
    success: bool
    success_source: str
    interventions: int
    holds: int
    bridge_dropped_frames: int
    reconnects: int
    safety_counts: dict[str, int]
    loop: dict[str, float]
    aborted: str | None = None
    """Why the episode ended early (``operator``, ``estop``), or None."""


def hold_action(robot: Robot, obs: dict[str, Any] | None, last_gripper: float) -> np.ndarray:
    """The action a hold amounts to: zero motion (``ee_delta``) or the measured pose (joints).

    The measured pose is clamped into the joint limits, as the hold a robot publishes is (see
    :meth:`robots.ros_robot.RosRobot.hold`): the logged action never lies outside the limits.
    """
    lim = robot.limits
    if lim.action_space == "ee_delta":
        return np.array([0, 0, 0, 0, 0, 0, last_gripper], dtype=np.float32)
    joints = np.zeros(lim.n_joints)
    if obs is not None:
        joints = np.asarray(robot.state_layout.joints(np.asarray(obs[STATE_KEY])), dtype=np.float64)
    joints = np.clip(joints, lim.joint_pos_min, lim.joint_pos_max)
    tail = [last_gripper] if lim.has_gripper else []
    return np.concatenate([joints, tail]).astype(np.float32)


class EpisodeRunner:
    """Runs episodes of one policy on one robot, writing frames to a :class:`DeployDataset`."""

    def __init__(self, robot: Robot, policy: Callable[[dict[str, Any]], np.ndarray],
                 settings: DeploySettings, dataset: DeployDataset | None = None,
                 teleop: Teleop | None = None, outcome: OutcomeSource | None = None,
                 on_step: Callable[[int, StepRecord], None] | None = None) -> None:
        self.robot = robot if isinstance(robot, GuardedRobot) else GuardedRobot(robot)
        self.policy = policy
        self.settings = settings
        self.dataset = dataset
        self.teleop = teleop or NoTeleop()
        self.outcome = outcome or FixedOutcome(False)
        self.on_step = on_step
        self.hz = settings.control_hz or robot.config.control_hz
        self.stop_requested = False

    def _executor(self) -> ChunkExecutor:
        safety_cfg = SafetyConfig(**{**asdict(self.settings.safety), "control_dt": 1.0 / self.hz})
        safety = SafetyFilter(self.robot.limits, self.robot.state_layout, safety_cfg)
        return ChunkExecutor(self.robot, self.policy, safety, self.settings.executor)

    def run_episode(self) -> EpisodeResult:
        """Reset the robot, run until done, write the episode (if a dataset is attached)."""
        self.robot.reset()
        new_episode = getattr(self.teleop, "new_episode", None)
        if new_episode is not None:
            new_episode()
        executor = self._executor()
        loop = RateLoop(self.hz, realtime=self.settings.realtime)
        stats = LoopStats(1.0 / self.hz)
        state = _EpisodeState(connects=self.robot.link()[1])
        executor.start()
        loop.start()
        # A full garbage collection inside a control period is a multi-millisecond pause; collect
        # between episodes instead (an episode's garbage is bounded by its length).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for t in range(self.settings.max_steps):
                if self._step(executor, t, stats, state):
                    break
                loop.wait()
        finally:
            executor.close()
            if gc_was_enabled:
                gc.enable()
        stats.overruns = loop.overruns
        result = self._finish(executor, stats, state)
        gc.collect()
        return result

    def _step(self, executor: ChunkExecutor, t: int, stats: LoopStats, state: _EpisodeState) -> bool:
        """One control step and its frame; True when the episode is over."""
        self.robot.send_failed = False
        operator = self.teleop.action(state.last_obs, t)
        record = executor.step(intervention=operator)
        end = time.monotonic()
        obs = record.observation
        stats.add(record.time, end, None if obs is None else obs.get("observation.stamp"))
        connected, connects = self.robot.link()
        dropped = not connected or connects != state.connects or self.robot.send_failed
        state.reconnects += connects - state.connects
        state.connects = connects
        if self.robot.send_failed:
            executor.safety.notify_hold()
        if self.on_step is not None:
            self.on_step(t, record)
        reward, success = self.outcome.step()
        state.success = state.success or success
        if success and state.success_step is None:
            state.success_step = t
        verdict = self.outcome.verdict()
        done = self._done(t, state, verdict)
        if obs is not None:
            self._write_frame(record, end, dropped, reward, success, done, state)
        else:
            state.skipped += 1
        if obs is not None:
            state.last_obs = obs
        return done

    def _done(self, t: int, state: _EpisodeState, verdict: bool | None) -> bool:
        s = self.settings
        if verdict is not None and not isinstance(self.outcome, FixedOutcome):
            state.aborted = state.aborted or "operator"
            return True
        if isinstance(self.teleop, KeyboardTeleop) and self.teleop.quit:
            self.stop_requested = True
            state.aborted = "operator"
            return True
        if s.end_on_success and state.success_step is not None and t - state.success_step >= s.success_hold_steps:
            return True
        return t == s.max_steps - 1

    def _write_frame(self, record: StepRecord, end: float, dropped: bool, reward: float,
                     success: bool, done: bool, state: _EpisodeState) -> None:
        obs = record.observation
        assert obs is not None
        held = record.command is None or self.robot.send_failed
        if held:
            executed = hold_action(self.robot, obs, state.gripper)
        else:
            executed = np.asarray(record.command, dtype=np.float32)
            if self.robot.limits.has_gripper:
                state.gripper = float(executed[-1])
        proposed = record.policy_action
        events = list(record.events) + ([SafetyEvent("send_failed", "action", math.nan, math.nan, record.step)]
                                        if self.robot.send_failed else [])
        for e in events:
            state.counts[e.kind] = state.counts.get(e.kind, 0) + 1
        state.frames += 1
        state.holds += held
        state.interventions += record.intervention
        state.dropped += dropped
        if self.dataset is None:
            return
        dim = self.robot.limits.action_dim
        extra = {
            "action.policy": np.zeros(dim, np.float32) if proposed is None else np.asarray(proposed, np.float32),
            "intervention": [record.intervention], "safety.held": [held],
            "safety.events": [len(events)], "safety.flags": [event_flags(events)],
            "bridge_dropped": [dropped], "timing.obs_to_command_ms": [(end - record.time) * 1e3],
        }
        self.dataset.add_frame(_frame_obs(obs), executed, reward=reward, success=success, done=done, extra=extra)

    def _finish(self, executor: ChunkExecutor, stats: LoopStats, state: _EpisodeState) -> EpisodeResult:
        verdict = self.outcome.verdict()
        success = state.success if verdict is None else bool(verdict)
        source = type(self.outcome).__name__
        counts = dict(state.counts)
        for e in executor.events:
            if e.kind == "watchdog_hold":
                counts["watchdog_hold"] = counts.get("watchdog_hold", 0) + 1
        result = EpisodeResult(
            steps=len(stats.starts), frames=state.frames, success=success, success_source=source,
            interventions=state.interventions, holds=state.holds, bridge_dropped_frames=state.dropped,
            reconnects=state.reconnects, safety_counts=counts, loop=stats.summary(), aborted=state.aborted)
        if self.dataset is not None:
            if state.frames:
                self.dataset.save_episode(asdict(result))
            else:
                self.dataset.discard_episode()
        return result


@dataclass
class _EpisodeState:
    connects: int
    last_obs: dict[str, Any] | None = None
    success: bool = False
    success_step: int | None = None
    frames: int = 0
    skipped: int = 0
    holds: int = 0
    interventions: int = 0
    dropped: int = 0
    reconnects: int = 0
    gripper: float = -1.0
    aborted: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def wait_for_observation(robot: Robot, timeout_s: float) -> dict[str, Any]:
    """The first complete observation, waiting up to ``timeout_s``; raises RobotError naming why."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return robot.get_observation()
        except ObservationUnavailable as exc:
            last = exc
            time.sleep(0.02)
    raise RobotError(f"no observation from robot '{robot.config.name}' within {timeout_s} s: {last}")
