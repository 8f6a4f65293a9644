"""The safety filter between a policy and a robot.

Invariant: **nothing outside the robot's limits ever leaves the filter.** Every action is either
clipped into the limits or refused; a refusal means *hold* (stop where you are). Each clip or
refusal is recorded as a :class:`SafetyEvent` and counted, so deployments can be audited and the
deploy loop can log them next to the commanded and executed actions.

What is enforced, per control step of length ``dt``:

- contract range ([-1, 1]) for ``ee_delta`` actions; joint position limits; the EE workspace box;
- per-axis velocity (``|step| <= v_max * dt``) and acceleration
  (``|step - previous step| <= a_max * dt^2``);
- a *braking margin* near every position limit: a step is only allowed if the axis can still stop
  inside the limit decelerating at ``a_max``. Without it, an axis moving fast toward a limit would
  have to choose between violating the limit and violating the acceleration bound; with it, both
  hold on every step (proof sketch in :func:`braking_step`);
- gripper range and rate;
- NaN/inf or wrongly shaped actions, stale observations (age > ``max_obs_age_s``), a measured
  state outside the joint limits, excessive tracking error: refused (hold);
- an e-stop latch: once tripped, every step holds until :meth:`SafetyFilter.reset_estop`.

A hold is a stop, not a command: acceleration limits do not apply to it (the robot controller
decelerates), and after a hold the filter re-seeds from the measured state.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robots.base import STAMP_KEY, RobotLimits, StateLayout
from vla_rft.contract import STATE_KEY

# Slack for float rounding in the invariant (limits are in rad / m / [-1, 1]).
EPS = 1e-9


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    """One clip or refusal: what happened, to which field, the requested value and the limit."""

    kind: str
    """``clip_range``, ``clip_position``, ``clip_workspace``, ``clip_velocity``,
    ``clip_acceleration``, ``clip_gripper_range``, ``clip_gripper_rate``, ``accel_infeasible``,
    ``reject_nonfinite``, ``reject_shape``, ``reject_state``, ``state_outside_limits``,
    ``state_outside_workspace``, ``tracking_error``, ``hold_stale``, ``estop_tripped``,
    ``estop_latched``, or (from the executor) ``policy_starved``/``watchdog_hold``."""
    field: str
    """The action entry (``joint[2]``, ``ee.x``, ``rot.z``, ``gripper``) or ``action``/``observation``."""
    value: float
    """The requested value, in the limit's unit (rad, m, rad/s, m/s^2, s, ...); NaN when none."""
    limit: float
    """The limit it was held to, same unit; NaN when none applies."""
    step: int
    """The filter's step counter when it happened."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "field": self.field, "value": self.value,
                "limit": self.limit, "step": self.step}


@dataclass
class SafetyConfig:
    """Policy-side safety settings (the robot's own limits come from :class:`RobotLimits`)."""

    control_dt: float = 0.1
    """Control period (s); velocity/acceleration limits are converted to per-step bounds with it."""
    max_obs_age_s: float | None = 0.25
    """Hold when the observation's oldest input is older than this (s); null disables."""
    max_tracking_error: float | None = None
    """Hold when a joint lags its previous command by more than this (rad); null disables."""
    estop_on_nonfinite: bool = False
    """Trip the e-stop latch (not just hold) when the policy emits NaN/inf."""
    history: int = 10_000
    """How many recent events :attr:`SafetyFilter.history` keeps."""


@dataclass(frozen=True)
class FilterResult:
    """What the filter let through: a command, or ``None`` meaning *hold*.

    Commands are float64: rounding to float32 could push a value clipped exactly onto a limit
    that float32 cannot represent (2.9 rad) a hair outside it.
    """

    command: np.ndarray | None
    events: tuple[SafetyEvent, ...]
    step: int

    @property
    def held(self) -> bool:
        return self.command is None


def braking_step(room: np.ndarray, a_step: np.ndarray) -> np.ndarray:
    """Largest step ``v >= 0`` after which decelerating by ``a_step`` per step stops within ``room``.

    Moving ``v`` now and then ``v - a, v - 2a, ...`` covers ``f(v) = v + sum_k max(v - k a, 0)``,
    piecewise linear and increasing; ``f(n a) = a n (n + 1) / 2``. We find ``n`` with
    ``f(n a) <= room < f((n + 1) a)`` and solve the linear piece. If the previous step ``v0``
    satisfied this bound, ``v0 - a`` (or 0 when ``v0 < a``) satisfies it now, so the acceleration
    and position limits are always jointly feasible when the filter's own commands are tracked.
    """
    room = np.maximum(room, 0.0)
    n = np.floor((np.sqrt(1.0 + 8.0 * room / a_step) - 1.0) / 2.0)
    return np.minimum((room + a_step * n * (n + 1.0) / 2.0) / (n + 1.0), room)


@dataclass
class _Axes:
    """Per-axis limits for :func:`limit_motion`, in per-step units."""

    names: list[str]
    lo: np.ndarray
    hi: np.ndarray
    v_step: np.ndarray
    a_step: np.ndarray
    dt: float
    position_kind: str = "clip_position"
    bounded: bool = True
    """False for axes without position limits (rotation): no braking margin is computed."""

    def __post_init__(self) -> None:
        # ``a_step`` twice, for the upper and lower braking margins computed in one call.
        self.a_step2 = np.concatenate([self.a_step, self.a_step])


def limit_motion(target: np.ndarray, prev: np.ndarray, pos: np.ndarray, ax: _Axes,
                 step: int, events: list[SafetyEvent]) -> np.ndarray:
    """Clip a per-step motion ``target`` (position change) to position/velocity/acceleration limits.

    Position (with braking margin) and velocity are hard; acceleration is honoured whenever it is
    compatible with them, otherwise an ``accel_infeasible`` event records the exception. (This
    runs every control step: it is written to keep the number of numpy calls small.)
    """
    n = len(pos)
    if ax.bounded:
        brake = braking_step(np.concatenate([ax.hi - pos, pos - ax.lo]), ax.a_step2)
        brake_hi, brake_lo = brake[:n], brake[n:]
        hard_hi, hard_lo = np.minimum(ax.v_step, brake_hi), -np.minimum(ax.v_step, brake_lo)
    else:
        brake_hi = brake_lo = np.full(n, np.inf)
        hard_hi, hard_lo = ax.v_step, -ax.v_step
    acc_lo, acc_hi = prev - ax.a_step, prev + ax.a_step
    lo, hi = np.maximum(hard_lo, acc_lo), np.minimum(hard_hi, acc_hi)
    if (lo > hi).any():
        lo, hi = _resolve_infeasible(lo, hi, hard_lo, hard_hi, acc_lo, acc_hi, prev, ax, step, events)
    out = np.minimum(np.maximum(target, lo), hi)
    if (out != target).any():
        for i in np.flatnonzero(out != target):
            above = target[i] > hi[i]
            events.append(_motion_event(i, target[i], hi[i] if above else lo[i], prev[i], pos[i],
                                        ax, step, brake_hi[i] if above else -brake_lo[i]))
    return out


def _resolve_infeasible(lo: np.ndarray, hi: np.ndarray, hard_lo: np.ndarray, hard_hi: np.ndarray,
                        acc_lo: np.ndarray, acc_hi: np.ndarray, prev: np.ndarray, ax: _Axes,
                        step: int, events: list[SafetyEvent]) -> tuple[np.ndarray, np.ndarray]:
    """Where the acceleration interval misses the hard one, pin to the hard bound nearest to it."""
    bad = lo > hi
    pin = np.where(acc_lo > hard_hi, hard_hi, hard_lo)
    gap = np.maximum(acc_lo - hard_hi, hard_lo - acc_hi)
    # Rounding alone can make the intervals miss each other by ~1e-17: not worth an event.
    for i in np.flatnonzero(bad & (gap > 1e-12)):
        events.append(SafetyEvent("accel_infeasible", ax.names[i], float((pin[i] - prev[i]) / ax.dt**2),
                                  float(ax.a_step[i] / ax.dt**2), step))
    return np.where(bad, pin, lo), np.where(bad, pin, hi)


def _motion_event(i: int, target: float, bound: float, prev: float, pos: float, ax: _Axes,
                  step: int, brake: float) -> SafetyEvent:
    """Name the constraint that bound ``target`` (position, then velocity, then acceleration)."""
    name = ax.names[i]
    if bound == brake:
        limit = ax.hi[i] if target > 0 else ax.lo[i]
        return SafetyEvent(ax.position_kind, name, float(pos + target), float(limit), step)
    if abs(bound) == ax.v_step[i]:
        return SafetyEvent("clip_velocity", name, float(target / ax.dt), float(ax.v_step[i] / ax.dt), step)
    return SafetyEvent("clip_acceleration", name, float((target - prev) / ax.dt**2),
                       float(ax.a_step[i] / ax.dt**2), step)


class SafetyFilter:
    """Stateful filter for one robot; call :meth:`filter` once per control step.

    It remembers its previous output to bound velocity and acceleration, so every command the
    robot receives must come from this filter (or be a hold, after which it re-seeds).
    """

    def __init__(self, limits: RobotLimits, layout: StateLayout, config: SafetyConfig | None = None):
        self.limits = limits
        self.layout = layout
        self.config = config or SafetyConfig()
        self.counts: collections.Counter[str] = collections.Counter()
        self.history: collections.deque[SafetyEvent] = collections.deque(maxlen=self.config.history)
        self.step = 0
        self.latched = False
        self.latch_reason = ""
        self._dt = self.config.control_dt
        self._check_layout()
        self._axes = self._build_axes()
        self._rot_axes = self._build_rot_axes()
        self.reset()

    # ----------------------------------------------------------------- setup
    def _check_layout(self) -> None:
        lim, lay = self.limits, self.layout
        if lim.action_space == "ee_delta" and lay.ee_position is None:
            raise ValueError("ee_delta robots need state_layout.ee_position for the workspace check")
        if lim.action_space == "joint_position" and lay.joint_positions is None:
            raise ValueError("joint_position robots need state_layout.joint_positions")
        if lim.action_space == "joint_position":
            start, stop = lay.joint_positions  # type: ignore[misc]
            if stop - start != lim.n_joints:
                raise ValueError(f"state_layout.joint_positions covers {stop - start} joints, "
                                 f"limits have {lim.n_joints}")

    def _build_axes(self) -> _Axes:
        lim, dt = self.limits, self._dt
        if lim.action_space == "ee_delta":
            return _Axes(["ee.x", "ee.y", "ee.z"], np.array(lim.ee_workspace_min, float),
                         np.array(lim.ee_workspace_max, float), np.full(3, lim.ee_vel_max * dt),
                         np.full(3, lim.ee_acc_max * dt * dt), dt, "clip_workspace")
        n = lim.n_joints
        return _Axes([f"joint[{i}]" for i in range(n)], np.array(lim.joint_pos_min, float),
                     np.array(lim.joint_pos_max, float), np.array(lim.joint_vel_max, float) * dt,
                     np.array(lim.joint_acc_max, float) * dt * dt, dt)

    def _build_rot_axes(self) -> _Axes:
        lim, dt = self.limits, self._dt
        return _Axes(["rot.x", "rot.y", "rot.z"], np.full(3, -np.inf), np.full(3, np.inf),
                     np.full(3, lim.ee_rot_vel_max * dt), np.full(3, lim.ee_rot_acc_max * dt * dt), dt, bounded=False)

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget the motion history: the next command is bounded relative to the measured state."""
        self._prev_cmd: np.ndarray | None = None
        self._prev_step = np.zeros(len(self._axes.names))
        self._prev_rot = np.zeros(3)
        self._prev_gripper: float | None = None

    def trip(self, reason: str) -> None:
        """Latch the e-stop: from now on every step holds until :meth:`reset_estop`."""
        if not self.latched:
            self._record([SafetyEvent("estop_tripped", reason, math.nan, math.nan, self.step)])
        self.latched, self.latch_reason = True, reason

    def reset_estop(self) -> None:
        """Explicit operator action: clear the latch; motion restarts from the measured state."""
        self.latched, self.latch_reason = False, ""
        self.reset()

    def notify_hold(self) -> None:
        """Tell the filter the robot was told to hold outside it (watchdog, operator)."""
        self.reset()

    # ----------------------------------------------------------------- filtering
    def filter(self, action: Any, obs: dict[str, Any], now: float | None = None) -> FilterResult:
        """Return a command inside the limits, or a hold, for ``action`` given observation ``obs``."""
        self.step += 1
        events: list[SafetyEvent] = []
        state = self._refusal(action, obs, now, events)
        command = None
        if state is not None:
            a = np.asarray(action, dtype=np.float64)
            if self.limits.action_space == "ee_delta":
                command = self._filter_ee(a, state, events)
            else:
                command = self._filter_joint(a, state, events)
        if command is None:
            self.reset()
        self._record(events)
        return FilterResult(command, tuple(events), self.step)

    def _refusal(self, action: Any, obs: dict[str, Any], now: float | None,
                 events: list[SafetyEvent]) -> np.ndarray | None:
        """The measured state if the step may proceed; otherwise append the reason and return None."""
        s = self.step
        if self.latched:
            events.append(SafetyEvent("estop_latched", "action", math.nan, math.nan, s))
            return None
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            a = np.full(0, np.nan)
        if a.shape != (self.limits.action_dim,):
            events.append(SafetyEvent("reject_shape", "action", float(a.size), self.limits.action_dim, s))
            return None
        if not np.all(np.isfinite(a)):
            events.append(SafetyEvent("reject_nonfinite", "action", math.nan, math.nan, s))
            if self.config.estop_on_nonfinite:
                self.trip("nonfinite action")
            return None
        if self._stale(obs, now, events):
            return None
        state = np.asarray(obs.get(STATE_KEY, np.full(0, np.nan)), dtype=np.float64)
        if state.ndim != 1 or state.size == 0 or not np.all(np.isfinite(state)):
            events.append(SafetyEvent("reject_state", "observation", math.nan, math.nan, s))
            return None
        return state

    def _stale(self, obs: dict[str, Any], now: float | None, events: list[SafetyEvent]) -> bool:
        max_age = self.config.max_obs_age_s
        if max_age is None:
            return False
        stamp = obs.get(STAMP_KEY)
        age = math.inf if stamp is None else (time.monotonic() if now is None else now) - float(stamp)
        if not age <= max_age:
            events.append(SafetyEvent("hold_stale", "observation", age, max_age, self.step))
            return True
        return False

    def _filter_joint(self, a: np.ndarray, state: np.ndarray, events: list[SafetyEvent]) -> np.ndarray | None:
        lim, ax, n = self.limits, self._axes, self.limits.n_joints
        measured = self.layout.joints(state)
        if self._prev_cmd is None:
            if np.any(measured < ax.lo - EPS) or np.any(measured > ax.hi + EPS):
                i = int(np.argmax(np.maximum(ax.lo - measured, measured - ax.hi)))
                events.append(SafetyEvent("state_outside_limits", ax.names[i], float(measured[i]),
                                          float(np.clip(measured[i], ax.lo[i], ax.hi[i])), self.step))
                return None
            self._prev_cmd = np.clip(measured, ax.lo, ax.hi)
            self._prev_gripper = self.layout.gripper_value(state)
        elif self._tracking_error(measured, events):
            return None
        step = limit_motion(a[:n] - self._prev_cmd, self._prev_step, self._prev_cmd, ax, self.step, events)
        q = np.minimum(np.maximum(self._prev_cmd + step, ax.lo), ax.hi)
        self._prev_step, self._prev_cmd = q - self._prev_cmd, q
        if not lim.has_gripper:
            return q
        return np.concatenate([q, [self._filter_gripper(a[n], events)]])

    def _tracking_error(self, measured: np.ndarray, events: list[SafetyEvent]) -> bool:
        tol = self.config.max_tracking_error
        if tol is None or self._prev_cmd is None:
            return False
        err = np.abs(measured - self._prev_cmd)
        if np.all(err <= tol):
            return False
        i = int(np.argmax(err))
        events.append(SafetyEvent("tracking_error", self._axes.names[i], float(err[i]), tol, self.step))
        return True

    def _filter_ee(self, a: np.ndarray, state: np.ndarray, events: list[SafetyEvent]) -> np.ndarray:
        s = self.step
        clipped = np.minimum(np.maximum(a, -1.0), 1.0)
        names = ["ee.x", "ee.y", "ee.z", "rot.x", "rot.y", "rot.z", "gripper"]
        for i in np.flatnonzero(clipped != a):
            events.append(SafetyEvent("clip_range", names[i], float(a[i]), float(clipped[i]), s))
        ee = self.layout.ee(state)
        ax = self._axes
        outside = (ee < ax.lo - EPS) | (ee > ax.hi + EPS)
        for i in np.flatnonzero(outside):
            events.append(SafetyEvent("state_outside_workspace", ax.names[i], float(ee[i]),
                                      float(np.clip(ee[i], ax.lo[i], ax.hi[i])), s))
        if self._prev_gripper is None:
            self._prev_gripper = self.layout.gripper_value(state)
        pos_scale, rot_scale = self.limits.ee_pos_scale, self.limits.ee_rot_scale
        trans = limit_motion(clipped[:3] * pos_scale, self._prev_step, ee, ax, s, events)
        rot = limit_motion(clipped[3:6] * rot_scale, self._prev_rot, np.zeros(3),
                           self._rot_axes, s, events)
        self._prev_step, self._prev_rot = trans, rot
        grip = self._filter_gripper(clipped[6], events)
        out = np.concatenate([trans / pos_scale, rot / rot_scale, [grip]])
        return np.minimum(np.maximum(out, -1.0), 1.0)

    def _filter_gripper(self, g: float, events: list[SafetyEvent]) -> float:
        lim, s = self.limits, self.step
        out = min(max(float(g), lim.gripper_min), lim.gripper_max)
        if out != g:
            events.append(SafetyEvent("clip_gripper_range", "gripper", float(g),
                                      lim.gripper_max if g > out else lim.gripper_min, s))
        prev = self._prev_gripper
        if prev is not None:
            rate = lim.gripper_rate_max * self._dt
            lo, hi = max(prev - rate, lim.gripper_min), min(prev + rate, lim.gripper_max)
            limited = min(max(out, min(lo, hi)), max(lo, hi))
            if limited != out:
                events.append(SafetyEvent("clip_gripper_rate", "gripper", (out - prev) / self._dt,
                                          lim.gripper_rate_max, s))
            out = limited
        self._prev_gripper = out
        return out

    def filter_chunk(self, chunk: Any, obs: dict[str, Any], now: float | None = None
                     ) -> tuple[np.ndarray, list[FilterResult]]:
        """Filter a chunk for a trajectory controller, assuming each command is tracked.

        Returns the accepted commands (stopping at the first hold) and every step's result. For
        ``ee_delta`` the predicted EE position advances by each accepted step.
        """
        obs = dict(obs)
        state = np.asarray(obs.get(STATE_KEY), dtype=np.float64).copy()
        accepted, results = [], []
        for action in np.asarray(chunk, dtype=np.float64):
            res = self.filter(action, {**obs, STATE_KEY: state}, now)
            results.append(res)
            if res.command is None:
                break
            accepted.append(res.command)
            self._advance_predicted(state, res.command)
        dim = self.limits.action_dim
        return (np.stack(accepted) if accepted else np.zeros((0, dim), np.float32)), results

    def _advance_predicted(self, state: np.ndarray, command: np.ndarray) -> None:
        """Move the predicted measured state as if ``command`` had been tracked exactly."""
        lay = self.layout
        if self.limits.action_space == "ee_delta":
            state[slice(*lay.ee_position)] += command[:3] * self.limits.ee_pos_scale  # type: ignore[misc]
        else:
            state[slice(*lay.joint_positions)] = command[: self.limits.n_joints]  # type: ignore[misc]
        if lay.gripper is not None and self.limits.has_gripper:
            state[lay.gripper] = command[-1]

    def _record(self, events: list[SafetyEvent]) -> None:
        for e in events:
            self.counts[e.kind] += 1
        self.history.extend(events)

    def summary(self) -> dict[str, Any]:
        """Counts per event kind, the step count and the latch state (for logs)."""
        return {"steps": self.step, "latched": self.latched, "latch_reason": self.latch_reason,
                "counts": dict(self.counts)}

