"""Chunk execution: from a chunking policy to one filtered command per control period.

A policy returns a chunk of ``h`` future actions for the observation it saw. This module decides
which action runs at each control step:

- ``open_loop``: play the newest chunk (at most ``execute_horizon`` of its actions);
- ``ensemble``: ACT's temporal ensembling. Every chunk that covers step ``t`` proposes an action;
  they are averaged with weights ``exp(-m * i)``, ``i = 0`` for the oldest proposal (ACT's choice:
  with ``m > 0`` older proposals weigh more, which smooths the motion).

Chunks are aligned to the step of the observation they were computed from, so a chunk that
arrives ``k`` steps late skips its first ``k`` actions (they were meant for the past).
With ``async_inference`` the next chunk is computed in a background thread while the current one
plays, triggered when fewer than ``refill_threshold`` future steps remain covered. When nothing
covers the current step (the policy is late or failed) the arm holds.

A :class:`Watchdog` thread guards the loop itself: if no command or hold has been issued for
``watchdog_timeout_s`` (observations blocked, a hung driver call) it makes the robot hold.
Every step yields a :class:`StepRecord` for the deploy loop's episode log.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np

from robots.base import ObservationUnavailable, Robot
from robots.safety import SafetyEvent, SafetyFilter

ChunkPolicy = Callable[[dict[str, Any]], np.ndarray]
"""``infer(observation) -> chunk (h, A)``: a local policy, or ``PolicyClient.infer``."""


@dataclass
class ExecutorConfig:
    """How chunks become per-step commands."""

    mode: Literal["open_loop", "ensemble"] = "open_loop"
    """``open_loop``: newest chunk wins; ``ensemble``: ACT temporal ensembling."""
    ensemble_m: float = 0.01
    """Ensembling decay ``m`` in ``exp(-m * i)``; 0 gives a plain average."""
    execute_horizon: int | None = None
    """Use at most this many actions of each chunk (null: the whole chunk)."""
    refill_threshold: int = 2
    """Request the next chunk when fewer than this many future steps are covered."""
    async_inference: bool = True
    """Compute the next chunk in a background thread while the current one plays."""
    first_chunk_timeout_s: float = 10.0
    """How long the first step waits for the first chunk before holding."""
    watchdog_timeout_s: float | None = None
    """Hold when the loop issued nothing for this long (s); null: 1.5 control periods."""


@dataclass
class StepRecord:
    """What happened at one control step (the deploy loop logs these)."""

    step: int
    time: float
    """``time.monotonic()`` at the start of the step."""
    observation: dict[str, Any] | None
    """The observation the step acted on (None when none was available)."""
    policy_action: np.ndarray | None
    """The action proposed by the policy (or the intervention) before safety filtering."""
    command: np.ndarray | None
    """The filtered action actually sent; None when the robot was told to hold."""
    events: tuple[SafetyEvent, ...]
    intervention: bool = False
    """True when an operator's action replaced the policy's at this step."""
    chunk_age: int | None = None
    """Steps between the observation the used chunk was computed from and now."""

    @property
    def held(self) -> bool:
        return self.command is None


@dataclass
class _Chunk:
    start: int
    """The step of the observation it was computed from: ``actions[i]`` is meant for ``start + i``."""
    actions: np.ndarray


class Watchdog:
    """Calls ``on_timeout`` once when :meth:`kick` has not been called for ``timeout_s``.

    It re-arms at the next kick. The polling interval is a fraction of the timeout, so the hold
    lands well within one control period of the deadline.
    """

    def __init__(self, timeout_s: float, on_timeout: Callable[[float], None], poll_s: float | None = None):
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.poll_s = poll_s if poll_s is not None else max(timeout_s / 20, 0.0005)
        self.fired = 0
        self._last = time.monotonic()
        self._armed = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="robots-watchdog", daemon=True)

    def start(self) -> None:
        self.kick()
        self._thread.start()

    def kick(self) -> None:
        with self._lock:
            self._last, self._armed = time.monotonic(), True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                silent = time.monotonic() - self._last
                due = self._armed and silent > self.timeout_s
                if due:
                    self._armed = False
            if due:
                self.fired += 1
                self.on_timeout(silent)


class ChunkExecutor:
    """Runs a chunking policy on a robot through a safety filter, one step per control period."""

    def __init__(self, robot: Robot, policy: ChunkPolicy, safety: SafetyFilter,
                 config: ExecutorConfig | None = None) -> None:
        self.robot = robot
        self.policy = policy
        self.safety = safety
        self.config = config or ExecutorConfig()
        self.t = 0
        self.events: list[SafetyEvent] = []
        """Events raised outside the filter (starvation, policy errors, watchdog holds)."""
        self._chunks: list[_Chunk] = []
        self._pending: concurrent.futures.Future[np.ndarray] | None = None
        self._pending_start = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="robots-infer")
        dt = robot.config.control_dt
        timeout = self.config.watchdog_timeout_s or 1.5 * dt
        self.watchdog = Watchdog(timeout, self._watchdog_hold)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the watchdog; call before the first :meth:`step` of a real-time loop."""
        self.watchdog.start()

    def close(self) -> None:
        """Stop the watchdog and the inference thread, and leave the robot holding."""
        self.watchdog.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.robot.hold()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def estop(self, reason: str = "operator") -> None:
        """Latch the filter, trigger the robot's e-stop, hold. Only :meth:`reset_estop` undoes it."""
        self.safety.trip(reason)
        self.robot.estop()
        self.robot.hold()

    def reset_estop(self) -> None:
        self.safety.reset_estop()
        self._chunks.clear()

    # ------------------------------------------------------------------ one step
    def step(self, intervention: np.ndarray | None = None, now: float | None = None) -> StepRecord:
        """Run one control step (no sleeping): observe, pick an action, filter, command or hold."""
        start = time.monotonic() if now is None else now
        try:
            obs = self.robot.get_observation()
        except ObservationUnavailable as exc:
            return self._hold_step(start, None, SafetyEvent("observation_unavailable", str(exc),
                                                            math.nan, math.nan, self.safety.step))
        self._harvest()
        self._maybe_request(obs)
        proposed, age = self._select(self.t)
        if intervention is not None:
            proposed, age = np.asarray(intervention, dtype=np.float32), None
        if proposed is None:
            return self._hold_step(start, obs, SafetyEvent("policy_starved", "action", math.nan,
                                                           math.nan, self.safety.step))
        result = self.safety.filter(proposed, obs, now)
        if result.command is None:
            self.robot.hold()
        else:
            self.robot.send_action(result.command)
        self.watchdog.kick()
        record = StepRecord(self.t, start, obs, proposed, result.command, result.events,
                            intervention is not None, age)
        self.t += 1
        return record

    def _hold_step(self, start: float, obs: dict[str, Any] | None, event: SafetyEvent) -> StepRecord:
        self.robot.hold()
        self.safety.notify_hold()
        self.watchdog.kick()
        self.events.append(event)
        record = StepRecord(self.t, start, obs, None, None, (event,))
        self.t += 1
        return record

    def run(self, n_steps: int, on_step: Callable[[StepRecord], None] | None = None) -> list[StepRecord]:
        """Run ``n_steps`` at the robot's control rate (sleeping between steps)."""
        dt = self.robot.config.control_dt
        records = []
        next_tick = time.monotonic()
        for _ in range(n_steps):
            record = self.step()
            records.append(record)
            if on_step is not None:
                on_step(record)
            next_tick += dt
            time.sleep(max(0.0, next_tick - time.monotonic()))
        return records

    # ------------------------------------------------------------------ chunks
    def _horizon(self, chunk: _Chunk) -> int:
        h = len(chunk.actions)
        return h if self.config.execute_horizon is None else min(h, self.config.execute_horizon)

    def _covered_until(self) -> int:
        """First step no chunk covers (== self.t when nothing covers the current step)."""
        return max((c.start + self._horizon(c) for c in self._chunks), default=self.t)

    def _maybe_request(self, obs: dict[str, Any]) -> None:
        if self._pending is not None:
            return
        if self._covered_until() - self.t - 1 >= self.config.refill_threshold:
            return
        self._pending = self._pool.submit(self._infer, obs)
        self._pending_start = self.t
        first = not self._chunks
        if not self.config.async_inference or first:
            timeout = self.config.first_chunk_timeout_s if first else None
            concurrent.futures.wait([self._pending], timeout=timeout)
            self._harvest()

    def _infer(self, obs: dict[str, Any]) -> np.ndarray:
        chunk = np.asarray(self.policy(obs), dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != self.robot.limits.action_dim:
            raise ValueError(f"policy returned a chunk of shape {chunk.shape}, expected "
                             f"(h, {self.robot.limits.action_dim})")
        return chunk

    def _harvest(self) -> None:
        """Take a finished inference into the chunk list (or record its failure)."""
        if self._pending is None or not self._pending.done():
            return
        future, self._pending = self._pending, None
        try:
            self._chunks.append(_Chunk(self._pending_start, future.result()))
        except Exception as exc:  # noqa: BLE001 - the policy may fail in any way; the robot must not
            self.events.append(SafetyEvent("policy_error", f"{type(exc).__name__}: {exc}",
                                           math.nan, math.nan, self.safety.step))
        self._chunks = [c for c in self._chunks if c.start + self._horizon(c) > self.t]

    def _select(self, t: int) -> tuple[np.ndarray | None, int | None]:
        """The action for step ``t`` and the age of the chunk that proposed it."""
        live = [c for c in self._chunks if c.start <= t < c.start + self._horizon(c)]
        if not live:
            return None, None
        if self.config.mode == "open_loop":
            newest = live[-1]
            return newest.actions[t - newest.start], t - newest.start
        proposals = np.stack([c.actions[t - c.start] for c in live])
        return ensemble(proposals, self.config.ensemble_m), t - live[-1].start

    def _watchdog_hold(self, silent_s: float) -> None:
        self.robot.hold()
        self.safety.notify_hold()
        self.events.append(SafetyEvent("watchdog_hold", "loop", silent_s, self.watchdog.timeout_s,
                                       self.safety.step))


def ensemble(proposals: np.ndarray, m: float) -> np.ndarray:
    """ACT temporal ensembling of ``proposals (k, A)``, oldest first: weights ``exp(-m * i)``."""
    w = np.exp(-m * np.arange(len(proposals)))
    return (w[:, None] * proposals).sum(0).astype(np.float32) / np.float32(w.sum())


@dataclass
class EpisodeStats:
    """Counts over a list of step records (for a quick summary after a run)."""

    steps: int = 0
    holds: int = 0
    interventions: int = 0
    events: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, records: list[StepRecord]) -> EpisodeStats:
        stats = cls(steps=len(records))
        for r in records:
            stats.holds += r.held
            stats.interventions += r.intervention
            for e in r.events:
                stats.events[e.kind] = stats.events.get(e.kind, 0) + 1
        return stats
