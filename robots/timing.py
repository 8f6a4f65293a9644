"""Fixed-rate scheduling and per-step timing statistics of the deploy loop.

Why the schedule sleeps until a deadline rather than for a period: a step's own duration would
otherwise add to every period, and the error would accumulate. A missed deadline is counted as an
overrun and the schedule re-anchors (no burst of catch-up steps, which would be a burst of motion).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


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
