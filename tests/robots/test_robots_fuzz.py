"""Bounded fuzz tests of the deployment invariants.

- 100,000 random and adversarial actions through the safety filter: no command outside limits;
- 10,000 malformed, oversized or unauthenticated messages to the policy server: no crash, no
  request accepted without the token;
- the watchdog holds within one control period of its deadline.
"""

from __future__ import annotations

import asyncio
import time

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from robots.base import STAMP_KEY, RobotLimits, StateLayout
from robots.client import PolicyClient
from robots.executor import ChunkExecutor, ExecutorConfig
from robots.fake import FakeRobot
from robots.safety import SafetyConfig, SafetyFilter
from robots.server import PolicyServer
from robots.wire import pack
from vla_rft.contract import ACTION_POS_SCALE, STATE_KEY

DT = 0.05
TOL = 1e-9
N_JOINT, N_EE = 70_000, 30_000


def adversarial_actions(rng: np.random.Generator, n: int, dim: int, scale: float) -> np.ndarray:
    """Mixtures of huge, NaN/inf, bang-bang, drift-out-of-bounds and plausible actions."""
    kind = rng.integers(0, 6, n)
    a = rng.normal(0.0, scale, (n, dim))
    a[kind == 1] *= 1e6
    bang = kind == 2
    a[bang] = np.sign(rng.normal(size=(int(bang.sum()), dim))) * scale * 3
    out = kind == 3
    a[out] = scale * 10
    bad = kind == 4
    mask = rng.random((int(bad.sum()), dim)) < 0.3
    a[bad] = np.where(mask, rng.choice([np.nan, np.inf, -np.inf], size=mask.shape), a[bad])
    a[kind == 5] = rng.uniform(-scale, scale, (int((kind == 5).sum()), dim))
    return a


def run_joint(rng: np.random.Generator) -> None:
    """Perfect tracking: the next state is the last command (a hold leaves the arm where it is)."""
    n_j = 6
    lo, hi = -rng.uniform(0.5, 3, n_j), rng.uniform(0.5, 3, n_j)
    vmax, amax = rng.uniform(0.2, 2, n_j), rng.uniform(1, 10, n_j)
    limits = RobotLimits(joint_pos_min=list(lo), joint_pos_max=list(hi), joint_vel_max=list(vmax),
                         joint_acc_max=list(amax), gripper_min=-0.8, gripper_max=0.9,
                         gripper_rate_max=3.0)
    f = SafetyFilter(limits, StateLayout([0, n_j], n_j), SafetyConfig(control_dt=DT))
    actions = adversarial_actions(rng, N_JOINT, n_j + 1, 2.0)
    before = np.zeros((N_JOINT, n_j + 1))  # state each command started from
    commands = np.full((N_JOINT, n_j + 1), np.nan)  # NaN rows: held
    fresh = np.zeros(N_JOINT, bool)  # first step of an episode
    state, now = np.zeros(n_j + 1), time.monotonic()
    for t in range(N_JOINT):
        if t % 1000 == 0:  # a fresh episode from a random pose inside the limits
            state, fresh[t] = np.append(rng.uniform(lo, hi), rng.uniform(-0.8, 0.9)), True
            f.reset()
        before[t] = state
        res = f.filter(actions[t], {STATE_KEY: state, STAMP_KEY: now}, now)
        if res.command is not None:
            commands[t] = state = res.command
    sent = ~np.isnan(commands[:, 0])
    q, g = commands[sent, :n_j], commands[sent, n_j]
    assert np.all(np.isfinite(commands[sent]))
    assert np.all(q >= lo - TOL) and np.all(q <= hi + TOL)
    step = np.where(sent[:, None], commands[:, :n_j] - before[:, :n_j], 0.0)
    assert np.all(np.abs(step) <= vmax * DT + TOL)
    # the previous step is 0 after a hold (a stop) and at an episode start
    prev = np.vstack([np.zeros(n_j), step[:-1]])
    prev[fresh] = 0.0
    assert np.all(np.abs(step - prev)[sent] <= amax * DT * DT + TOL)
    assert np.all((g >= -0.8 - TOL) & (g <= 0.9 + TOL))
    assert np.all(np.abs(g - before[sent, n_j]) <= 3.0 * DT + TOL)
    assert sent.sum() > N_JOINT // 2
    assert f.counts["accel_infeasible"] == 0
    assert f.counts["reject_nonfinite"] > 0 and f.counts["clip_position"] > 0


def run_ee(rng: np.random.Generator) -> None:
    lo, hi = np.array([0.2, -0.3, 0.02]), np.array([0.7, 0.3, 0.5])
    limits = RobotLimits(action_space="ee_delta", ee_workspace_min=list(lo), ee_workspace_max=list(hi),
                         ee_vel_max=0.3, ee_acc_max=2.0, ee_rot_vel_max=1.0, ee_rot_acc_max=10.0)
    f = SafetyFilter(limits, StateLayout(None, 3, [0, 3]), SafetyConfig(control_dt=DT))
    actions = adversarial_actions(rng, N_EE, 7, 1.0)
    before = np.zeros((N_EE, 4))
    commands = np.full((N_EE, 7), np.nan)
    state, now = np.array([0.45, 0.0, 0.2, -1.0]), time.monotonic()
    for t in range(N_EE):
        before[t] = state
        res = f.filter(actions[t], {STATE_KEY: state, STAMP_KEY: now}, now)
        if res.command is not None:
            commands[t] = res.command
            state = np.append(state[:3] + res.command[:3] * ACTION_POS_SCALE, res.command[6])
    sent = ~np.isnan(commands[:, 0])
    c = commands[sent]
    assert np.all(np.isfinite(c)) and np.all(np.abs(c) <= 1.0 + TOL)
    target = before[sent, :3] + c[:, :3] * ACTION_POS_SCALE
    assert np.all(target >= lo - TOL) and np.all(target <= hi + TOL)
    move = np.where(sent[:, None], np.nan_to_num(commands[:, :6]) * ([ACTION_POS_SCALE] * 3 + [0.15] * 3), 0)
    assert np.all(np.abs(move[:, :3]) <= 0.3 * DT + TOL) and np.all(np.abs(move[:, 3:]) <= 1.0 * DT + TOL)
    dmove = np.abs(np.diff(np.vstack([np.zeros(6), move]), axis=0))[sent]
    assert np.all(dmove[:, :3] <= 2.0 * DT * DT + TOL) and np.all(dmove[:, 3:] <= 10.0 * DT * DT + TOL)
    assert f.counts["accel_infeasible"] == 0 and f.counts["clip_workspace"] > 0


def test_fuzz_safety_filter_never_lets_out_of_limit_commands_through() -> None:
    start = time.perf_counter()
    rng = np.random.default_rng(1234)
    run_joint(rng)
    run_ee(rng)
    assert time.perf_counter() - start < 60


# ---------------------------------------------------------------------- policy server fuzz
def malformed_messages(rng: np.random.Generator, n: int) -> list[bytes]:
    """Bytes that are not valid requests: garbage, wrong types, bad arrays, wrong schema."""
    good_state = {"__ndarray__": True, "dtype": "<f4", "shape": [7], "data": b"\0" * 28}
    templates = [
        lambda: rng.bytes(int(rng.integers(0, 64))),
        lambda: msgpack.packb(int(rng.integers(-1000, 1000))),
        lambda: msgpack.packb([1, 2, 3]),
        lambda: msgpack.packb({"type": "infer"}),
        lambda: msgpack.packb({"type": "infer", "obs": "nope"}),
        lambda: msgpack.packb({"type": rng.choice(["act", "", "INFER", "helth"])}),
        lambda: msgpack.packb({"type": "infer", "obs": {"observation.state": good_state}}),
        lambda: msgpack.packb({"type": "infer", "obs": {"observation.state": {
            "__ndarray__": True, "dtype": "|O", "shape": [7], "data": b"\0" * 56}, "task": "x"}}),
        lambda: msgpack.packb({"type": "infer", "obs": {"observation.state": {
            "__ndarray__": True, "dtype": "<f4", "shape": [10**9], "data": b"\0" * 28}, "task": "x"}}),
        lambda: msgpack.packb({"type": "infer", "batched": True, "obs": {
            "observation.state": good_state, "task": ["a"]}}),
        lambda: msgpack.packb({"type": "infer", "obs": {"observation.state": good_state,
                                                        "task": "x", "evil": 1}}),
        lambda: msgpack.packb({"type": "infer", "id": [1], "obs": {}}),
        lambda: pack({"type": "infer", "obs": {"observation.state": np.full(7, np.nan, np.float32),
                                               "task": "x",
                                               "observation.images.front": np.zeros((8, 8, 3), np.uint8)}}),
        lambda: pack({"type": "infer", "obs": {"observation.state": np.zeros(7, np.float32),
                                               "task": "x",
                                               "observation.images.front": np.zeros((9, 8, 3), np.uint8)}}),
        lambda: msgpack.packb({"a": {"b": {"c": [[[[]]]]}}}),
        lambda: b"\xc1" * 8,
    ]
    return [templates[int(rng.integers(len(templates)))]() for _ in range(n)]


async def _fuzz_server(port: int, token: str, rng: np.random.Generator) -> dict[str, int]:
    url = f"ws://127.0.0.1:{port}"
    counts = {"error_replies": 0, "unauth_rejected": 0, "oversized_closed": 0}
    # 1. 8,000 malformed requests on authenticated connections: every one answered by an error.
    msgs = malformed_messages(rng, 8000)
    for batch in range(4):
        async with connect(url, max_size=2**22) as ws:
            await ws.send(pack({"type": "auth", "token": token}))
            assert msgpack.unpackb(await ws.recv())["type"] == "metadata"
            for raw in msgs[batch * 2000:(batch + 1) * 2000]:
                await ws.send(raw)
                reply = msgpack.unpackb(await ws.recv())
                assert reply["type"] == "error", reply
                counts["error_replies"] += 1
    # 2. 1,900 unauthenticated attempts: valid requests without / with wrong tokens.
    good = pack({"type": "infer", "obs": {"observation.state": np.zeros(7, np.float32), "task": "x",
                                          "observation.images.front": np.zeros((8, 8, 3), np.uint8)}})
    firsts = [good, pack({"type": "health"}), pack({"type": "auth", "token": token[:-1]}),
              pack({"type": "auth", "token": token + "x"}), pack({"type": "auth", "token": 123}),
              pack({"type": "auth"}), b"\x00garbage"]
    for i in range(1900):
        async with connect(url, max_size=2**22) as ws:
            await ws.send(firsts[i % len(firsts)])
            if i % 2 == 0:
                await ws.send(good)  # a request smuggled right after the bad auth
            reply = msgpack.unpackb(await ws.recv())
            assert reply["type"] == "error" and reply["code"] == "unauthorized", reply
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            counts["unauth_rejected"] += 1
    # 3. 100 oversized frames: the connection is closed, the server keeps serving.
    for _ in range(100):
        async with connect(url, max_size=2**22) as ws:
            await ws.send(pack({"type": "auth", "token": token}))
            await ws.recv()
            await ws.send(b"\x00" * (2**20 + 1))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            counts["oversized_closed"] += 1
    return counts


def test_fuzz_policy_server_survives_and_never_serves_without_token(policy_server: PolicyServer) -> None:
    from conftest import TOKEN

    start = time.perf_counter()
    counts = asyncio.run(asyncio.wait_for(
        _fuzz_server(policy_server.port, TOKEN, np.random.default_rng(7)), 120))
    assert counts == {"error_replies": 8000, "unauth_rejected": 1900, "oversized_closed": 100}
    stats = policy_server.stats
    assert stats["ok"] == 0, "no malformed or unauthenticated request may succeed"
    assert stats["auth_failed"] == 1900
    with PolicyClient(port=policy_server.port, token=TOKEN, timeout_s=5) as client:
        chunk = client.infer({STATE_KEY: np.arange(7, dtype=np.float32), "task": "x",
                              "observation.images.front": np.zeros((8, 8, 3), np.uint8)})
        assert chunk.shape == (4, 7) and client.health()["status"] == "ok"
    assert time.perf_counter() - start < 90


# ---------------------------------------------------------------------- watchdog
def test_watchdog_holds_within_one_control_period(fake_robot: FakeRobot) -> None:
    period = fake_robot.config.control_dt
    limits = fake_robot.limits
    safety = SafetyFilter(limits, fake_robot.state_layout, SafetyConfig(control_dt=period))
    policy = lambda obs: np.repeat(obs[STATE_KEY][None, :7], 50, axis=0)
    ex = ChunkExecutor(fake_robot, policy, safety, ExecutorConfig(watchdog_timeout_s=period))
    with ex:
        ex.run(5)
        last_command = fake_robot.call_times("send_action")[-1]
        fake_robot.block_observations.set()  # the sensors go silent: the loop blocks in get_observation
        worker = __import__("threading").Thread(target=ex.step, daemon=True)
        worker.start()
        deadline = time.monotonic() + 2.0
        while not [t for t in fake_robot.call_times("hold") if t > last_command]:
            assert time.monotonic() < deadline, "watchdog never held"
            time.sleep(0.001)
        hold = min(t for t in fake_robot.call_times("hold") if t > last_command)
        fake_robot.release_observations()
        worker.join(2.0)
    assert hold - last_command <= ex.watchdog.timeout_s + period
    assert any(e.kind == "watchdog_hold" for e in ex.events)
