"""Safety filter behaviour, one property at a time (the fuzz test checks the invariant at scale)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from robots.base import STAMP_KEY, RobotLimits, StateLayout, robot_config_from_dict
from robots.safety import SafetyConfig, SafetyFilter, braking_step
from vla_rft.contract import ACTION_POS_SCALE, ACTION_ROT_SCALE, STATE_KEY

DT = 0.1


def joint_filter(**cfg: object) -> SafetyFilter:
    limits = RobotLimits(joint_pos_min=[-1.0, -1.0], joint_pos_max=[1.0, 1.0],
                         joint_vel_max=[1.0, 1.0], joint_acc_max=[5.0, 5.0], gripper_rate_max=2.0)
    return SafetyFilter(limits, StateLayout([0, 2], 2), SafetyConfig(control_dt=DT, **cfg))  # type: ignore[arg-type]


def obs(state: list[float], age: float = 0.0) -> dict:
    return {STATE_KEY: np.array(state, np.float32), STAMP_KEY: time.monotonic() - age}


def kinds(result) -> set[str]:
    return {e.kind for e in result.events}


def test_in_limits_action_passes_unchanged() -> None:
    f = joint_filter()
    res = f.filter([0.05, -0.05, -1.0], obs([0.0, 0.0, -1.0]))
    np.testing.assert_allclose(res.command, [0.05, -0.05, -1.0], atol=1e-6)
    assert res.events == ()


def test_velocity_is_clipped_and_recorded() -> None:
    f = joint_filter()
    res = f.filter([0.9, 0.0, -1.0], obs([0.0, 0.0, -1.0]))
    # first step from rest: acceleration bound 5 * 0.01 = 0.05 rad is tighter than 0.1 rad
    assert res.command[0] == pytest.approx(0.05)
    event = next(e for e in res.events if e.field == "joint[0]")
    assert event.kind == "clip_acceleration" and event.step == 1
    assert event.limit == pytest.approx(5.0)
    seen: set[str] = set()
    for _ in range(4):
        seen |= kinds(f.filter([0.9, 0.0, -1.0], obs([0.0, 0.0, -1.0])))
    assert "clip_velocity" in seen
    assert f.counts["clip_velocity"] >= 1 and f.counts["clip_acceleration"] >= 1


def test_nan_and_inf_hold_and_can_trip_the_latch() -> None:
    f = joint_filter()
    for bad in ([math.nan, 0.0, 0.0], [0.0, math.inf, 0.0]):
        res = f.filter(bad, obs([0.0, 0.0, 0.0]))
        assert res.held and kinds(res) == {"reject_nonfinite"}
    latching = joint_filter(estop_on_nonfinite=True)
    latching.filter([math.nan, 0, 0], obs([0.0, 0.0, 0.0]))
    assert latching.latched and latching.filter([0, 0, 0], obs([0.0, 0.0, 0.0])).held


def test_wrong_shape_holds() -> None:
    res = joint_filter().filter([0.0, 0.0], obs([0.0, 0.0, 0.0]))
    assert res.held and kinds(res) == {"reject_shape"}


def test_stale_or_unstamped_observations_hold() -> None:
    f = joint_filter(max_obs_age_s=0.2)
    assert kinds(f.filter([0, 0, 0], obs([0.0, 0.0, 0.0], age=0.5))) == {"hold_stale"}
    assert f.filter([0, 0, 0], {STATE_KEY: np.zeros(3, np.float32)}).held
    assert not f.filter([0, 0, 0], obs([0.0, 0.0, 0.0], age=0.05)).held


def test_estop_latch_holds_until_explicit_reset() -> None:
    f = joint_filter()
    f.trip("operator pressed stop")
    for _ in range(3):
        res = f.filter([0.0, 0.0, 0.0], obs([0.0, 0.0, 0.0]))
        assert res.held and kinds(res) == {"estop_latched"}
    assert f.counts["estop_tripped"] == 1 and f.summary()["latch_reason"] == "operator pressed stop"
    f.reset_estop()
    assert not f.filter([0.0, 0.0, 0.0], obs([0.0, 0.0, 0.0])).held


def test_position_limit_is_approached_with_a_braking_margin() -> None:
    f = joint_filter()
    q, qs = 0.0, []
    for _ in range(60):
        res = f.filter([5.0, 0.0, 0.0], obs([q, 0.0, 0.0]))
        q = res.command[0]
        qs.append(q)
    steps = np.diff([0.0, *qs])
    assert max(qs) <= 1.0 + 1e-9 and qs[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.abs(np.diff(np.concatenate([[0.0], steps]))) <= 5.0 * DT * DT + 1e-9)
    assert f.counts["clip_position"] > 0 and f.counts["accel_infeasible"] == 0


def test_braking_step_stops_within_the_room() -> None:
    rng = np.random.default_rng(0)
    room, a = rng.uniform(0, 2, 1000), rng.uniform(0.001, 0.1, 1000)
    v = braking_step(room, a)
    travelled = v.copy()
    speed = v.copy()
    while np.any(speed > 0):
        speed = np.maximum(speed - a, 0)
        travelled += speed
    assert np.all(travelled <= room + 1e-9)
    assert np.all(braking_step(room + 1e-3, a) >= v)


def test_state_outside_joint_limits_refuses_to_move() -> None:
    res = joint_filter().filter([0.0, 0.0, 0.0], obs([1.3, 0.0, 0.0]))
    assert res.held and kinds(res) == {"state_outside_limits"}
    assert res.events[0].value == pytest.approx(1.3) and res.events[0].limit == 1.0


def test_tracking_error_holds() -> None:
    f = joint_filter(max_tracking_error=0.2)
    f.filter([0.0, 0.0, 0.0], obs([0.0, 0.0, 0.0]))
    res = f.filter([0.0, 0.0, 0.0], obs([0.5, 0.0, 0.0]))
    assert res.held and kinds(res) == {"tracking_error"}


def test_gripper_range_and_rate() -> None:
    f = joint_filter()
    res = f.filter([0.0, 0.0, 3.0], obs([0.0, 0.0, -1.0]))
    assert res.command[2] == pytest.approx(-0.8)  # rate 2/s * 0.1 s
    assert kinds(res) == {"clip_gripper_range", "clip_gripper_rate"}


def ee_filter() -> SafetyFilter:
    limits = RobotLimits(action_space="ee_delta", ee_workspace_min=[0.0, 0.0, 0.0],
                         ee_workspace_max=[0.5, 0.5, 0.5], ee_vel_max=0.3, ee_acc_max=3.0)
    return SafetyFilter(limits, StateLayout(None, 3, [0, 3]), SafetyConfig(control_dt=DT))


def test_ee_actions_respect_range_and_workspace() -> None:
    f = ee_filter()
    ee = np.array([0.49, 0.25, 0.25])
    res = f.filter([5.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0], obs([*ee, -1.0]))
    assert "clip_range" in kinds(res) and "clip_workspace" in kinds(res)
    assert ee[0] + res.command[0] * ACTION_POS_SCALE <= 0.5 + 1e-9
    assert np.all(np.abs(res.command) <= 1.0)


def test_ee_state_outside_workspace_only_moves_back() -> None:
    f = ee_filter()
    res = f.filter([1.0, 0.0, 0.0, 0, 0, 0, -1.0], obs([0.6, 0.25, 0.25, -1.0]))
    assert "state_outside_workspace" in kinds(res) and res.command[0] <= 0.0
    res = f.filter([-1.0, 0.0, 0.0, 0, 0, 0, -1.0], obs([0.6, 0.25, 0.25, -1.0]))
    assert res.command[0] < 0.0


def test_the_ee_action_scale_comes_from_the_robot_config() -> None:
    default_limits = RobotLimits(action_space="ee_delta")
    assert (default_limits.ee_pos_scale, default_limits.ee_rot_scale) == (ACTION_POS_SCALE, ACTION_ROT_SCALE)
    limits = {"action_space": "ee_delta", "ee_workspace_min": [0.0, 0.0, 0.0], "ee_workspace_max": [0.5] * 3,
              "ee_vel_max": 0.3, "ee_acc_max": 3.0}  # rotation: 1.5 rad/s, 15 rad/s^2 -> 0.15 rad/step
    results = {}
    for pos_scale, rot_scale in [(0.02, 0.15), (0.005, 0.3)]:
        cfg = robot_config_from_dict({"kind": "fake", "state_layout": {"ee_position": [0, 3], "gripper": 3},
                                      "limits": {**limits, "ee_pos_scale": pos_scale, "ee_rot_scale": rot_scale}})
        f = SafetyFilter(cfg.limits, cfg.state_layout, SafetyConfig(control_dt=DT))
        results[pos_scale] = f.filter([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0], obs([0.49, 0.25, 0.25, -1.0]))
    # 1 cm from the +x wall: a full step is 2 cm at the default scale (held to half), 0.5 cm at 0.005
    default, custom = results[0.02], results[0.005]
    assert default.command[0] == pytest.approx(0.5) and "clip_workspace" in kinds(default)
    assert custom.command[0] == pytest.approx(1.0)
    # rotation: 0.15 rad per step fits the rate limit exactly; 0.3 rad is held to half
    assert default.command[5] == pytest.approx(1.0) and custom.command[5] == pytest.approx(0.5)
    assert {e.field for e in custom.events} == {"rot.z"}


def test_filter_chunk_stops_at_the_first_hold() -> None:
    f = joint_filter()
    chunk = [[0.01, 0.0, 0.0], [0.02, 0.0, 0.0], [math.nan, 0.0, 0.0], [0.03, 0.0, 0.0]]
    accepted, results = f.filter_chunk(chunk, obs([0.0, 0.0, 0.0]))
    assert accepted.shape == (2, 3) and len(results) == 3 and results[-1].held
