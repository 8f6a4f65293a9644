"""Chunk executor: open-loop playback, latency alignment, ensembling, starvation, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from robots.executor import ChunkExecutor, EpisodeStats, ExecutorConfig, ensemble
from robots.fake import FakeRobot, FakeRobotConfig
from robots.safety import SafetyConfig, SafetyFilter
from vla_rft.contract import STATE_KEY


def make(policy, **cfg) -> tuple[ChunkExecutor, FakeRobot]:
    robot = FakeRobot(FakeRobotConfig(kind="fake", control_hz=50.0))
    safety = SafetyFilter(robot.limits, robot.state_layout, SafetyConfig(control_dt=0.02, max_obs_age_s=1.0))
    return ChunkExecutor(robot, policy, safety, ExecutorConfig(**cfg)), robot


class CountingPolicy:
    """Chunk i: every action's joint 0 = 0.001 * (call index * 100 + position in chunk)."""

    def __init__(self, h: int = 5, gate: threading.Event | None = None) -> None:
        self.h, self.calls, self.gate = h, 0, gate

    def __call__(self, obs: dict) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(5.0)
        chunk = np.zeros((self.h, 7), np.float32)
        chunk[:, 0] = 0.001 * (self.calls * 100 + np.arange(self.h))
        chunk[:, 6] = -1.0
        self.calls += 1
        return chunk


def test_open_loop_plays_chunks_in_order_and_refills() -> None:
    policy = CountingPolicy(h=5)
    ex, robot = make(policy, async_inference=False, refill_threshold=0)
    records = [ex.step() for _ in range(10)]
    proposed = [round(float(r.policy_action[0]) / 0.001) for r in records]
    # threshold 0: a new chunk only when nothing covers the step -> whole chunks, in order
    assert proposed == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert policy.calls == 2 and not any(r.held for r in records)
    assert len(robot.commands) == 10


def test_execute_horizon_limits_actions_per_chunk() -> None:
    policy = CountingPolicy(h=5)
    ex, _ = make(policy, async_inference=False, execute_horizon=2, refill_threshold=0)
    proposed = [round(float(ex.step().policy_action[0]) / 0.001) for _ in range(6)]
    # chunk k is requested at step 2k, so it is aligned to start there
    assert proposed == [0, 1, 100, 101, 200, 201]


def test_async_chunks_are_aligned_to_their_observation_step() -> None:
    gate = threading.Event()
    policy = CountingPolicy(h=8, gate=gate)
    ex, _ = make(policy, async_inference=True, refill_threshold=6)
    gate.set()
    first = ex.step()  # the first chunk is waited for
    gate.clear()
    ex.step()          # step 1: 6 future steps still covered, no request
    ex.step()          # step 2: 5 < 6 covered -> chunk 1 requested with step 2's observation
    ex.step()          # step 3: chunk 1 still computing -> chunk 0 keeps playing
    gate.set()
    assert ex._pending is not None
    ex._pending.result(5.0)
    r = ex.step()      # chunk 1 arrives at step 4; it was computed at step 2 -> use its action 2
    assert round(float(first.policy_action[0]) / 0.001) == 0
    assert round(float(r.policy_action[0]) / 0.001) == 102 and r.chunk_age == 2


def test_ensemble_uses_act_weights_oldest_first() -> None:
    proposals = np.array([[1.0], [3.0]], np.float32)
    m = 0.5
    w = np.exp(-m * np.arange(2))
    assert ensemble(proposals, m)[0] == pytest.approx((w[0] * 1 + w[1] * 3) / w.sum())
    policy = CountingPolicy(h=4)
    ex, _ = make(policy, async_inference=False, mode="ensemble", ensemble_m=0.01, refill_threshold=3)
    ex.step()
    r = ex.step()  # chunk 0 (action 1) and chunk 1 (action 0) both cover step 1
    w = np.exp(-0.01 * np.arange(2))
    expected = (w[0] * 0.001 + w[1] * 0.100) / w.sum()
    assert float(r.policy_action[0]) == pytest.approx(expected, rel=1e-5)


def test_policy_starvation_and_errors_hold() -> None:
    def broken(obs: dict) -> np.ndarray:
        raise RuntimeError("model exploded")

    ex, robot = make(broken, async_inference=False, first_chunk_timeout_s=1.0)
    r = ex.step()
    assert r.held and r.events[0].kind == "policy_starved"
    assert any(e.kind == "policy_error" and "model exploded" in e.field for e in ex.events)
    assert robot.call_times("hold")


def test_wrong_chunk_shape_is_a_policy_error() -> None:
    ex, _ = make(lambda obs: np.zeros((3, 5), np.float32), async_inference=False)
    assert ex.step().held
    assert any(e.kind == "policy_error" and "expected (h, 7)" in e.field for e in ex.events)


def test_intervention_replaces_the_policy_action_and_is_flagged() -> None:
    ex, _ = make(CountingPolicy(h=5), async_inference=False)
    r = ex.step(intervention=np.array([0.001, 0, 0, 0, 0, 0, -1.0], np.float32))
    assert r.intervention and float(r.command[0]) == pytest.approx(0.001)
    stats = EpisodeStats.of([r, ex.step()])
    assert stats.interventions == 1 and stats.steps == 2


def test_estop_latches_until_reset() -> None:
    ex, robot = make(CountingPolicy(h=50), async_inference=False)
    ex.step()
    ex.estop("test")
    assert robot.call_times("estop") and all(ex.step().held for _ in range(3))
    ex.reset_estop()
    assert not ex.step().held


def test_stale_observation_holds_through_the_filter() -> None:
    ex, robot = make(CountingPolicy(h=50), async_inference=False)
    robot.freeze_sensors = True
    ex.step()
    robot._stamp -= 5.0
    r = ex.step()
    assert r.held and {e.kind for e in r.events} == {"hold_stale"}
    assert r.observation is not None and STATE_KEY in r.observation
