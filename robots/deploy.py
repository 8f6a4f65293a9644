"""The deploy loop: a fixed-rate control loop that runs a policy on a robot and logs every episode.

One control period: read an observation, let the :class:`~robots.executor.ChunkExecutor` pick an
action (the policy's, or an operator's when a :class:`Teleop` source intervenes), pass it through
the :class:`~robots.safety.SafetyFilter`, command or hold, and append one LeRobotDataset frame:

- ``observation.*`` and ``task``: what the step acted on;
- ``action``: what the robot was actually told to do (the filtered command, or the hold pose);
- ``action.policy``: what the policy (or the operator) proposed before the filter;
- ``intervention``: an operator's action replaced the policy's (ConRFT's human corrections);
- ``safety.held``/``safety.events``/``safety.flags``: hold, number of filter/executor events, and
  a bitmask over :data:`EVENT_KINDS`;
- ``bridge_dropped``: the robot's link (rosbridge) was down or reconnected during the step;
- ``timing.obs_to_command_ms``: from the start of the step to the command leaving;
- ``next.reward``/``next.success``/``next.done`` from an :class:`OutcomeSource`.

Why the schedule sleeps until a deadline rather than for a period: a step's own duration would
otherwise add to every period, and the error would accumulate. A missed deadline is counted as an
overrun and the schedule re-anchors (no burst of catch-up steps, which would be a burst of motion).

Why every episode is finalized and the dataset re-opened: LeRobot keeps its parquet writers open
until ``finalize()``, and a file without its footer is unreadable, so a crash would lose *every*
earlier episode. Finalizing per episode puts each episode in its own closed files; a crash can
only lose the episode in progress.
"""

from __future__ import annotations

import gc
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import numpy as np

from robots.base import ObservationUnavailable, Robot, RobotError
from robots.executor import ChunkExecutor, ExecutorConfig, StepRecord
from robots.safety import SafetyConfig, SafetyEvent, SafetyFilter
from vla_rft.contract import IMAGE_PREFIX, STATE_KEY

EVENT_KINDS: tuple[str, ...] = (
    "clip_range", "clip_position", "clip_workspace", "clip_velocity", "clip_acceleration",
    "clip_gripper_range", "clip_gripper_rate", "accel_infeasible", "reject_nonfinite",
    "reject_shape", "reject_state", "state_outside_limits", "state_outside_workspace",
    "tracking_error", "hold_stale", "estop_tripped", "estop_latched", "policy_starved",
    "watchdog_hold", "observation_unavailable", "policy_error", "send_failed",
)
"""Bit ``i`` of ``safety.flags`` is set when an event of ``EVENT_KINDS[i]`` happened at the step;
bit 31 stands for any other kind."""

DEPLOY_FEATURE_KEYS = ("action.policy", "intervention", "safety.held", "safety.events",
                       "safety.flags", "bridge_dropped", "timing.obs_to_command_ms")


def deploy_features(action_dim: int) -> dict[str, dict[str, Any]]:
    """LeRobot feature specs of the deploy-only per-frame fields (``extra_features``)."""
    scalar = lambda dtype: {"dtype": dtype, "shape": (1,), "names": None}
    return {
        "action.policy": {"dtype": "float32", "shape": (action_dim,), "names": None},
        "intervention": scalar("bool"),
        "safety.held": scalar("bool"),
        "safety.events": scalar("int32"),
        "safety.flags": scalar("int64"),
        "bridge_dropped": scalar("bool"),
        "timing.obs_to_command_ms": scalar("float32"),
    }


def event_flags(events: Iterable[SafetyEvent]) -> int:
    """The ``safety.flags`` bitmask of a step's events."""
    flags = 0
    for e in events:
        flags |= 1 << (EVENT_KINDS.index(e.kind) if e.kind in EVENT_KINDS else 31)
    return flags


# ---------------------------------------------------------------------- timing
class RateLoop:
    """Sleep-until-deadline scheduling at ``hz`` with overrun counting.

    ``wait()`` is called after each step's work; it sleeps until ``start + k * dt``. When a step
    finishes after its deadline the overrun is counted and the next deadline is measured from now.
    """

    def __init__(self, hz: float, *, realtime: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not hz > 0:
            raise ValueError(f"control rate must be > 0 Hz, got {hz}")
        self.dt = 1.0 / hz
        self.realtime = realtime
        self.overruns = 0
        self._clock, self._sleep = clock, sleep
        self._deadline: float | None = None

    def start(self) -> None:
        self._deadline = self._clock()

    def wait(self) -> None:
        """Sleep until the next deadline (no-op when not realtime)."""
        if not self.realtime:
            return
        if self._deadline is None:
            self.start()
        assert self._deadline is not None
        self._deadline += self.dt
        now = self._clock()
        if now > self._deadline:
            self.overruns += 1
            self._deadline = now
            return
        self._sleep(self._deadline - now)


def percentile(values: list[float], q: float) -> float:
    """``q``-th percentile (NaN for no values)."""
    return float(np.percentile(values, q)) if values else math.nan


@dataclass
class LoopStats:
    """Per-step timing of a control loop: period, jitter, observation-to-command latency."""

    dt: float
    starts: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    obs_ages_ms: list[float] = field(default_factory=list)
    overruns: int = 0

    def add(self, start: float, end: float, stamp: float | None) -> None:
        self.starts.append(start)
        self.latencies_ms.append((end - start) * 1e3)
        if stamp is not None and math.isfinite(stamp):
            self.obs_ages_ms.append((end - stamp) * 1e3)

    def periods_ms(self) -> list[float]:
        return list(np.diff(self.starts) * 1e3) if len(self.starts) > 1 else []

    def summary(self) -> dict[str, float]:
        """p50/p99 of period, jitter (``|period - dt|``), latency and observation age, in ms."""
        periods = self.periods_ms()
        jitter = [abs(p - self.dt * 1e3) for p in periods]
        return {
            "steps": len(self.starts), "target_period_ms": self.dt * 1e3,
            "period_p50_ms": percentile(periods, 50), "period_p99_ms": percentile(periods, 99),
            "jitter_p50_ms": percentile(jitter, 50), "jitter_p99_ms": percentile(jitter, 99),
            "jitter_max_ms": max(jitter, default=math.nan),
            "obs_to_command_p50_ms": percentile(self.latencies_ms, 50),
            "obs_to_command_p99_ms": percentile(self.latencies_ms, 99),
            "obs_age_p50_ms": percentile(self.obs_ages_ms, 50),
            "obs_age_p99_ms": percentile(self.obs_ages_ms, 99),
            "overruns": self.overruns,
        }


# ---------------------------------------------------------------------- human intervention
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


# ---------------------------------------------------------------------- outcomes
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


# ---------------------------------------------------------------------- dataset
class DeployDataset:
    """A LeRobotDataset written one finalized episode at a time, plus ``meta/deploy_episodes.jsonl``.

    The sidecar holds what is per-episode rather than per-frame (verdict source, loop statistics,
    safety counts, reconnects); each line is written and fsynced after its episode is finalized.
    """

    SIDECAR = "meta/deploy_episodes.jsonl"

    def __init__(self, root: str | os.PathLike[str], features: dict[str, dict[str, Any]], fps: int,
                 robot_type: str) -> None:
        from vla_rft.data.lerobot_io import EpisodeWriter

        self.root = Path(root)
        self.writer = EpisodeWriter(self.root, features, fps=fps, robot_type=robot_type)
        self.episodes = 0
        self._needs_reopen = False

    def add_frame(self, obs: dict[str, Any], action: np.ndarray, *, reward: float, success: bool,
                  done: bool, extra: dict[str, Any]) -> None:
        if self._needs_reopen:
            self._reopen()
        self.writer.add_frame(obs, action, reward=reward, success=success, done=done, extra=extra)

    def save_episode(self, info: dict[str, Any]) -> None:
        """Save, finalize (closing every parquet file), then append the episode's sidecar line."""
        self.writer.save_episode()
        self.writer.finalize()
        self._needs_reopen = True
        line = json.dumps({"episode_index": self.episodes, **info}, default=_json_default)
        with open(self.root / self.SIDECAR, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.episodes += 1

    def discard_episode(self) -> None:
        self.writer.discard_episode()

    def _reopen(self) -> None:
        """Open the finalized dataset again for appending (LeRobot starts new files on resume)."""
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.writer.dataset = LeRobotDataset(f"local/{self.root.name}", root=self.root)
        self._needs_reopen = False


def _json_default(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def read_deploy_episodes(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The sidecar lines of a deploy dataset (one dict per finalized episode)."""
    path = Path(root) / DeployDataset.SIDECAR
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
        if isinstance(self.teleop, KeyboardTeleop):
            self.teleop.new_episode()
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


def _frame_obs(obs: dict[str, Any]) -> dict[str, Any]:
    """The contract part of an observation (drops the stamp and any debug entries)."""
    return {k: v for k, v in obs.items() if k in (STATE_KEY, "task") or k.startswith(IMAGE_PREFIX)}


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


# ---------------------------------------------------------------------- policies
@dataclass
class ResolvedPolicy:
    """A chunk policy ready for the executor, what it is, and how to release it."""

    infer: Callable[[dict[str, Any]], np.ndarray]
    name: str
    chunk_size: int
    close: Callable[[], None] = lambda: None


class GotoPolicy:
    """Scripted joint-space policy: straight to ``goal`` at a fraction of the velocity limits.

    Bring-up and end-to-end tests use it on ``joint_position`` robots: it needs no model, and
    its target is known, so a test can check the arm arrived.
    """

    def __init__(self, goal: list[float], robot: Robot, chunk_size: int = 5, speed_fraction: float = 0.5,
                 hz: float | None = None) -> None:
        lim = robot.limits
        if lim.action_space != "joint_position":
            raise ValueError("scripted:goto needs a joint_position robot")
        n = lim.n_joints
        if len(goal) not in (n, n + int(lim.has_gripper)):
            raise ValueError(f"scripted:goto needs {n} joint values (+ gripper), got {len(goal)}")
        self.goal = np.clip(np.asarray(goal[:n], float), lim.joint_pos_min, lim.joint_pos_max)
        self.gripper = float(goal[n]) if len(goal) > n else lim.gripper_min
        self.layout, self.has_gripper = robot.state_layout, lim.has_gripper
        self.max_step = np.asarray(lim.joint_vel_max) * speed_fraction / (hz or robot.config.control_hz)
        self.chunk_size = chunk_size

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        q = np.asarray(self.layout.joints(np.asarray(obs[STATE_KEY], float)), float)
        rows = []
        for _ in range(self.chunk_size):
            q = q + np.clip(self.goal - q, -self.max_step, self.max_step)
            rows.append(np.concatenate([q, [self.gripper] if self.has_gripper else []]))
        return np.asarray(rows, np.float32)


def resolve_policy(spec: str, robot: Robot, obs: dict[str, Any], *, token: str | None = None,
                   loader: str | None = None, hz: float | None = None,
                   timeout_s: float = 5.0) -> ResolvedPolicy:
    """``scripted:expert`` | ``scripted:goto:J1,..`` | ``scripted:zero|hold`` | ``ws://HOST:PORT`` | a
    checkpoint path, as a chunk policy for ``robot`` (whose first observation is ``obs``)."""
    if spec == "scripted:expert":
        make = getattr(robot, "make_expert", None)
        if make is None:
            raise ValueError(f"scripted:expert needs a simulated robot with a task expert, not kind "
                             f"'{robot.config.kind}'")
        expert = make()
        return ResolvedPolicy(lambda o: np.asarray(expert(o), np.float32)[None], spec, 1)
    if spec.startswith("scripted:goto:"):
        try:
            goal = [float(x) for x in spec.removeprefix("scripted:goto:").split(",")]
        except ValueError as exc:
            raise ValueError(f"scripted:goto:J1,J2,... needs numbers: {spec!r}") from exc
        goto = GotoPolicy(goal, robot, hz=hz)
        return ResolvedPolicy(goto, "scripted:goto", goto.chunk_size)
    if spec.startswith("ws://"):
        return _remote_policy(spec, robot, token, timeout_s)
    return _local_policy(spec, robot, obs, loader)


def _remote_policy(url: str, robot: Robot, token: str | None, timeout_s: float) -> ResolvedPolicy:
    from robots.client import PolicyClient
    from robots.server import TOKEN_ENV

    host, sep, port = url.removeprefix("ws://").rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"policy URL must be ws://HOST:PORT, got {url!r}")
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(f"a policy server needs a token: pass --token or set ${TOKEN_ENV}")
    client = PolicyClient(host, int(port), token, timeout_s=timeout_s)
    meta = client.connect()
    _check_policy_fits(meta.action_dim, meta.action_space, robot, meta.name)
    return ResolvedPolicy(client.infer, meta.name, meta.chunk_size, client.close)


def _local_policy(spec: str, robot: Robot, obs: dict[str, Any], loader: str | None) -> ResolvedPolicy:
    from robots.policy import load_policy

    lim = robot.limits
    options = {"action_dim": lim.action_dim, "state_dim": int(np.asarray(obs[STATE_KEY]).shape[0]),
               "action_space": lim.action_space, "cameras": list(robot.config.cameras)}
    policy = load_policy(spec, options, loader)
    meta = policy.metadata
    _check_policy_fits(meta.action_dim, meta.action_space, robot, meta.name)

    def infer(o: dict[str, Any]) -> np.ndarray:
        batch = {k: np.asarray(v)[None] for k, v in _frame_obs(o).items() if k != "task"}
        batch["task"] = [str(o.get("task", ""))]
        return np.asarray(policy.act(batch), np.float32)[0]

    return ResolvedPolicy(infer, meta.name, meta.chunk_size)


def _check_policy_fits(action_dim: int, action_space: str, robot: Robot, name: str) -> None:
    lim = robot.limits
    if action_dim != lim.action_dim or action_space != lim.action_space:
        raise ValueError(f"policy '{name}' emits {action_space} actions of size {action_dim}; robot "
                         f"'{robot.config.name}' takes {lim.action_space} of size {lim.action_dim}")
