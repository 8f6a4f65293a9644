"""The deploy loop: timing, interventions, link drops, dataset logging, crash safety, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TOKEN

from robots.base import RobotError, make_robot
from robots.deploy import (
    EVENT_KINDS,
    DeployDataset,
    DeploySettings,
    EpisodeRunner,
    ExpertSupervisor,
    FixedOutcome,
    KeyboardTeleop,
    LoopStats,
    RateLoop,
    RobotOutcome,
    ScriptedTeleop,
    deploy_features,
    event_flags,
    read_deploy_episodes,
    resolve_policy,
)
from robots.executor import ExecutorConfig
from robots.fake import FakeRobot, FakeRobotConfig
from robots.safety import SafetyEvent
from vla_rft.data.lerobot_io import contract_features, open_dataset

ROOT = Path(__file__).resolve().parents[2]
MUJOCO_YAML = ROOT / "configs" / "robots" / "mujoco_arm.yaml"
VLA_RFT = [sys.executable, "-m", "vla_rft.cli"]


# ---------------------------------------------------------------------- timing
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_rate_loop_sleeps_until_deadlines_and_counts_overruns() -> None:
    clock = FakeClock()
    loop = RateLoop(20.0, clock=clock, sleep=clock.sleep)
    loop.start()
    clock.now += 0.010  # a 10 ms step: sleep the remaining 40 ms, not a full period
    loop.wait()
    assert clock.sleeps[-1] == pytest.approx(0.040)
    assert clock.now == pytest.approx(100.050)
    clock.now += 0.080  # a step longer than the period: an overrun, no catch-up burst
    loop.wait()
    assert loop.overruns == 1 and len(clock.sleeps) == 1
    clock.now += 0.010  # the schedule re-anchored at the overrun (100.130): next deadline 100.180
    loop.wait()
    assert clock.now == pytest.approx(100.180) and clock.sleeps[-1] == pytest.approx(0.040)
    with pytest.raises(ValueError, match="must be > 0"):
        RateLoop(0.0)


def test_loop_stats_summarise_period_jitter_and_latency() -> None:
    stats = LoopStats(0.05)
    for i, start in enumerate([0.0, 0.050, 0.101, 0.150, 0.204]):
        stats.add(start, start + 0.002 * (i + 1), start - 0.010)
    s = stats.summary()
    assert s["steps"] == 5
    assert s["period_p50_ms"] == pytest.approx(50.5)  # periods 50, 51, 49, 54 ms
    assert s["jitter_max_ms"] == pytest.approx(4.0)
    assert s["obs_to_command_p50_ms"] == pytest.approx(6.0)
    assert s["obs_age_p50_ms"] == pytest.approx(16.0)


def test_event_flags_set_one_bit_per_kind() -> None:
    events = [SafetyEvent("clip_velocity", "joint[0]", 1, 1, 0), SafetyEvent("hold_stale", "obs", 1, 1, 0),
              SafetyEvent("clip_velocity", "joint[1]", 1, 1, 0), SafetyEvent("something_new", "x", 0, 0, 0)]
    flags = event_flags(events)
    assert flags == (1 << EVENT_KINDS.index("clip_velocity")) | (1 << EVENT_KINDS.index("hold_stale")) | (1 << 31)


# ---------------------------------------------------------------------- episodes
def _fake_joint_robot(**kw: Any) -> FakeRobot:
    return FakeRobot(FakeRobotConfig(kind="fake", cameras=["front"], image_shape=[8, 8], control_hz=50.0, **kw))


def _dataset(root: Path, robot: Any, obs: dict[str, Any]) -> DeployDataset:
    cams = list(robot.config.cameras)
    h, w = np.asarray(obs[f"observation.images.{cams[0]}"]).shape[:2]
    feats = contract_features(cams, (h, w), np.asarray(obs["observation.state"]).shape[0],
                              robot.limits.action_dim, extra_features=deploy_features(robot.limits.action_dim))
    return DeployDataset(root, feats, fps=int(robot.config.control_hz), robot_type=robot.config.name)


def test_mujoco_expert_episodes_are_logged_as_a_loadable_lerobot_dataset(tmp_path: Path) -> None:
    robot = make_robot(MUJOCO_YAML)
    try:
        obs = robot.get_observation()
        ds = _dataset(tmp_path / "ds", robot, obs)
        policy = resolve_policy("scripted:expert", robot, obs)
        runner = EpisodeRunner(robot, policy.infer, DeploySettings(
            max_steps=60, realtime=False, executor=ExecutorConfig(async_inference=False)), ds,
            outcome=RobotOutcome(robot))
        results = [runner.run_episode() for _ in range(2)]
    finally:
        robot.close()
    data = open_dataset(tmp_path / "ds")
    assert data.num_episodes == 2 and len(data) == sum(r.frames for r in results)
    last = data[results[0].frames - 1]
    assert bool(last["next.success"]) and bool(last["next.done"]) and float(last["next.reward"]) == 1.0
    first = data[0]
    assert not bool(first["next.done"]) and not bool(first["intervention"]) and not bool(first["bridge_dropped"])
    assert first["observation.images.front"].shape == (3, 64, 64)
    # the executed action is the filtered policy action (the expert's steps are within limits)
    assert np.allclose(first["action"].numpy(), first["action.policy"].numpy(), atol=1e-5)
    sidecar = read_deploy_episodes(tmp_path / "ds")
    assert [e["episode_index"] for e in sidecar] == [0, 1] and all(e["success"] for e in sidecar)


def test_scripted_supervisor_interventions_replace_the_policy_and_are_flagged(tmp_path: Path) -> None:
    robot = _fake_joint_robot()
    obs = robot.get_observation()
    ds = _dataset(tmp_path / "ds", robot, obs)
    takeover = np.array([0.01] * 6 + [1.0], np.float32)
    supervisor = ScriptedTeleop(lambda step, o: takeover if 3 <= step < 6 else None)
    policy = resolve_policy("scripted:hold", robot, obs)
    runner = EpisodeRunner(robot, policy.infer, DeploySettings(
        max_steps=10, realtime=False, executor=ExecutorConfig(async_inference=False)), ds,
                           supervisor, FixedOutcome(False))
    result = runner.run_episode()
    assert result.interventions == 3 and result.frames == 10
    data = open_dataset(tmp_path / "ds")
    flags = [bool(data[i]["intervention"]) for i in range(10)]
    assert flags == [False] * 3 + [True] * 3 + [False] * 4
    step4 = data[4]
    assert np.allclose(step4["action.policy"].numpy(), takeover)
    executed = step4["action"].numpy()
    # the operator's action still passes the filter: acceleration and gripper rate limits apply
    assert np.all(executed[:6] < takeover[:6]) and executed[6] < takeover[6]
    assert int(step4["safety.events"]) >= 1
    assert int(step4["safety.flags"]) & (1 << EVENT_KINDS.index("clip_gripper_rate"))


def test_expert_supervisor_takes_over_when_the_policy_stalls_and_hands_back() -> None:
    robot = make_robot({"kind": "mujoco", "task": "pick_cube", "cameras": [], "seed": 3})
    try:
        obs = robot.get_observation()
        policy = resolve_policy("scripted:zero", robot, obs)  # never makes progress
        supervisor = ExpertSupervisor(robot, stall_steps=10, takeover_steps=12)
        flags, rewards, ee = [], [], []

        def on_step(t: int, record: Any) -> None:
            flags.append(record.intervention)
            rewards.append(robot.outcome().reward)
            ee.append(np.asarray(robot.get_observation()["observation.state"][7:10]))

        runner = EpisodeRunner(robot, policy.infer, DeploySettings(
            max_steps=50, realtime=False, executor=ExecutorConfig(async_inference=False)), None,
            supervisor, RobotOutcome(robot), on_step=on_step)
        result = runner.run_episode()
        # the stall clock starts at the first step with an observation (step 1): takeover at 11..22,
        # handed back, then the policy gets a fresh stall window of 10 steps: 33..44
        assert [t for t, f in enumerate(flags) if f] == [*range(11, 23), *range(33, 45)]
        assert result.interventions == 24 and supervisor.takeovers == 2
        assert rewards[22] > rewards[10]  # the expert moved the arm toward the cube
        assert np.linalg.norm(ee[22] - ee[10]) > 0.03
        assert np.linalg.norm(ee[32] - ee[24]) < 0.005  # the zero policy holds still once handed back
        runner.run_episode()  # a new episode resets the supervisor's clock
        assert supervisor.takeovers == 4
    finally:
        robot.close()


def test_keyboard_teleop_reads_lines_without_blocking_the_loop() -> None:
    robot = make_robot({"kind": "fake", "limits": {"action_space": "ee_delta"},
                        "state_layout": {"ee_position": [0, 3], "gripper": 3}})
    r_fd, w_fd = os.pipe()
    with os.fdopen(r_fd) as reader, os.fdopen(w_fd, "w") as writer:
        kb = KeyboardTeleop(robot, reader)
        obs = robot.get_observation()
        t0 = time.monotonic()
        assert kb.action(obs, 0) is None  # nothing typed yet, and no blocking
        assert time.monotonic() - t0 < 0.05
        writer.write("i\nx+\ng\n")
        writer.flush()
        deadline = time.monotonic() + 2.0
        act = None
        while act is None and time.monotonic() < deadline:
            act = kb.action(obs, 1)
            time.sleep(0.01)
        assert act is not None
        assert act[0] == pytest.approx(0.5) and act[6] == pytest.approx(1.0) and not act[1:6].any()
        writer.write("s\n")
        writer.flush()
        while kb.verdict is None and time.monotonic() < deadline:
            kb.action(obs, 2)
            time.sleep(0.01)
        assert kb.verdict is True


class _LinkStub:
    """What the loop reads of a rosbridge client: connected and connection count."""

    def __init__(self) -> None:
        self.connected, self.connects = True, 1


class _DroppingRobot(FakeRobot):
    """A fake arm whose link goes down for steps 4..7 and comes back as a new connection."""

    def __init__(self, config: FakeRobotConfig) -> None:
        super().__init__(config)
        self.bridge = _LinkStub()
        self.sends = 0

    def send_action(self, action: np.ndarray) -> None:
        self.sends += 1
        if not self.bridge.connected:
            raise RobotError("rosbridge is disconnected: command not sent")
        super().send_action(action)


def test_a_dropped_link_holds_the_arm_and_marks_the_frames(tmp_path: Path) -> None:
    robot = _DroppingRobot(FakeRobotConfig(kind="fake", cameras=["front"], image_shape=[8, 8], control_hz=50.0))
    obs = robot.get_observation()
    ds = _dataset(tmp_path / "ds", robot, obs)
    goal = [0.2] * 6

    def on_step(t: int, record: Any) -> None:
        robot.bridge.connected = not (3 <= t < 7)
        if t == 7:
            robot.bridge.connects = 2

    policy = resolve_policy("scripted:goto:" + ",".join(map(str, goal)), robot, obs)
    runner = EpisodeRunner(robot, policy.infer, DeploySettings(
        max_steps=12, realtime=False, executor=ExecutorConfig(async_inference=False)), ds,
                           outcome=FixedOutcome(False), on_step=on_step)
    # Synchronous inference: with async inference and no real-time pacing, a loaded CPU can
    # starve the loop of its next chunk and add holds. on_step runs after step t, so the link is
    # down during steps 4..7 and step 8 sees the reconnect (a new connection count): those five
    # frames are marked.
    result = runner.run_episode()
    data = open_dataset(tmp_path / "ds")
    dropped = [bool(data[i]["bridge_dropped"]) for i in range(12)]
    held = [bool(data[i]["safety.held"]) for i in range(12)]
    assert dropped[4:9] == [True] * 5 and not any(dropped[:4]) and not any(dropped[9:])
    assert all(held[4:8]) and not any(held[:4]) and not any(held[8:])
    assert result.reconnects == 1 and result.bridge_dropped_frames == 5
    # a held frame logs the measured pose as the executed action, not the unsent command
    frame = data[5]
    assert np.allclose(frame["action"].numpy()[:6], frame["observation.state"].numpy()[:6])


# ---------------------------------------------------------------------- the CLI
def _cli(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([*VLA_RFT, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT, check=False, **kw)


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "scripted:expert", "--out", "X"], "--robot is required"),
    (["--robot", "nope.yaml", "--policy", "scripted:expert", "--out", "X"], "no such file 'nope.yaml'"),
    (["--robot", str(MUJOCO_YAML), "--policy", "scripted:expert", "--out", "X", "--teleop", "joystick"],
     "--teleop must be"),
    (["--robot", str(MUJOCO_YAML), "--policy", "scripted:expert", "--out", "X", "--success", "operator"],
     "needs --teleop keyboard"),
    (["--robot", str(MUJOCO_YAML), "--policy", "scripted:expert", "--out", "X", "--teleop", "expert",
      "--supervisor.stall_steps", "0"], "--supervisor.stall_steps and --supervisor.takeover_steps must be >= 1"),
])
def test_deploy_cli_rejects_bad_input_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / "out") if a == "X" else a for a in args]
    proc = _cli("deploy", *args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_deploy_cli_refuses_an_expert_on_a_robot_without_one(tmp_path: Path) -> None:
    yaml = tmp_path / "fake.yaml"
    yaml.write_text("kind: fake\ncameras: [front]\nimage_shape: [8, 8]\n")
    proc = _cli("deploy", "--robot", str(yaml), "--policy", "scripted:expert", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "scripted:expert needs a simulated robot" in proc.stderr, proc.stderr
    proc = _cli("deploy", "--robot", str(yaml), "--policy", "scripted:zero", "--teleop", "expert", "--out",
                str(tmp_path / "o"))
    assert proc.returncode == 2 and "--teleop expert needs a simulated robot" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()  # refused before anything was created


def test_deploy_cli_runs_a_policy_served_over_websockets(tmp_path: Path, policy_server: Any) -> None:
    yaml = tmp_path / "fake.yaml"
    yaml.write_text("kind: fake\ncontrol_hz: 20.0\ncameras: [front]\nimage_shape: [8, 8]\n")
    proc = _cli("deploy", "--robot", str(yaml), "--policy", f"ws://127.0.0.1:{policy_server.port}",
                "--token", TOKEN, "--max_steps", "15", "--episodes", "2", "--out", str(tmp_path / "ds"),
                "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["episodes"] == 2 and summary["frames"] == 30
    loop = summary["results"][0]["loop"]
    assert loop["period_p50_ms"] == pytest.approx(50.0, abs=5.0)
    assert open_dataset(tmp_path / "ds").num_episodes == 2


def test_a_killed_deploy_leaves_earlier_episodes_loadable(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc = subprocess.Popen([*VLA_RFT, "deploy", "--robot", str(MUJOCO_YAML), "--policy", "scripted:expert",
                             "--episodes", "50", "--max_steps", "20", "--until_success", "false",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    try:
        deadline = time.monotonic() + 90
        while len(read_deploy_episodes(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.8)  # inside a later episode (20 steps at 10 Hz = 2 s)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    written = len(read_deploy_episodes(out))
    assert written >= 2
    data = open_dataset(out)
    assert data.num_episodes == written and len(data) == 20 * written
    assert float(data[len(data) - 1]["observation.state"].sum()) != 0.0


def test_serve_cli_warms_the_policy_before_it_listens() -> None:
    proc = subprocess.Popen([*VLA_RFT, "serve", "--policy", "scripted:zero", "--port", "0", "--token", TOKEN],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr or []:
            lines.append(line)  # noqa: PERF402 - one at a time, as they arrive (the test polls)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any("serving scripted:zero on ws://" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    warm = [i for i, line in enumerate(lines) if "policy warm: first inference took" in line]
    serving = [i for i, line in enumerate(lines) if "serving scripted:zero on ws://" in line]
    assert warm and warm[0] < serving[0], "".join(lines)


def test_serve_is_a_cli_command() -> None:
    proc = _cli("serve", "--help", timeout=60)
    assert proc.returncode == 0 and "--port" in proc.stdout
    proc = _cli("serve", timeout=60)
    assert proc.returncode == 2 and "--policy is required" in proc.stderr
