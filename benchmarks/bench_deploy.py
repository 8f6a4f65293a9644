"""Deployment benchmark: control-loop timing through a real rosbridge, and the policy server's cost.

    python benchmarks/bench_deploy.py [--steps 400] [--calls 500] [--venv .venv-ros]

Measures, on this machine:

1. the deploy loop at 20 Hz driving the MuJoCo ROS 2 arm node through rosbridge-server-rs:
   period and jitter p50/p99 (target p99 <= 5 ms), overruns, observation-to-command latency
   (step start to command sent) and observation age (oldest input to command sent);
2. command to first observed motion through the bridge (publish a JointTrajectory, wait for the
   joint state to move);
3. one policy round trip through ``robots.server`` over loopback vs the same policy in-process,
   on a contract observation with one 64x64 camera (target: <= 2 ms added at p50).

Prints a table and writes benchmarks/results/deploy.json. Part 1-2 need the ROS venv
(``bash scripts/ros_test_env.sh``); without it they are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "ros"))
RESULT = ROOT / "benchmarks" / "results" / "deploy.json"
GOAL = [0.9, 0.6, 1.4, 0.0, 1.1, 0.0]


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "n": int(a.size)}


def bench_loop(stack: Any, steps: int) -> dict[str, Any]:
    """The deploy loop at 20 Hz through the bridge (goto policy, async chunks of 5)."""
    from robots.base import load_robot_config, make_robot
    from robots.deploy import DeploySettings, EpisodeRunner, resolve_policy, wait_for_observation

    cfg = load_robot_config(ROOT / "configs" / "robots" / "sim_arm_ros2.yaml")
    cfg.url = stack.url  # type: ignore[attr-defined]
    robot = make_robot(cfg)
    try:
        obs = wait_for_observation(robot, 30)
        policy = resolve_policy("scripted:goto:" + ",".join(map(str, GOAL)), robot, obs)
        runner = EpisodeRunner(robot, policy.infer, DeploySettings(max_steps=steps, end_on_success=False))
        result = runner.run_episode()
        motion = _command_to_motion(robot)
    finally:
        robot.close()
    return {"control_hz": cfg.control_hz, "loop": result.loop, "holds": result.holds,
            "command_to_motion": motion}


def _command_to_motion(robot: Any, trials: int = 20) -> dict[str, float]:
    """Publish a small j1 step and time until the measured j1 moves by 1 mrad."""
    from robots.deploy import wait_for_observation
    from vla_rft.contract import STATE_KEY

    times = []
    for i in range(trials):
        q = np.asarray(wait_for_observation(robot, 5)[STATE_KEY], float)
        target = q.copy()
        target[0] += 0.03 if i % 2 == 0 else -0.03
        target[-1] = -1.0
        start = time.monotonic()
        robot.send_action(target)
        while time.monotonic() - start < 1.0:
            if abs(float(robot.get_observation()[STATE_KEY][0]) - q[0]) > 1e-3:
                times.append((time.monotonic() - start) * 1e3)
                break
            time.sleep(0.0005)
        time.sleep(0.3)
    return _pct(times)


def bench_policy_round_trip(calls: int) -> dict[str, Any]:
    """``robots.server`` over loopback vs in-process, same scripted policy and observation."""
    from robots.client import PolicyClient
    from robots.policy import PolicyMetadata, ScriptedPolicy
    from robots.server import PolicyServer, ServerConfig

    meta = PolicyMetadata(name="scripted:hold", action_dim=7, chunk_size=10, state_dim=14,
                          cameras=["front"], image_shape=[64, 64], action_space="joint_position")
    policy = ScriptedPolicy("hold", meta)
    rng = np.random.default_rng(0)
    obs = {"observation.state": rng.standard_normal(14).astype(np.float32),
           "observation.images.front": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
           "task": "reach the red ball"}
    batch = {k: (np.asarray(v)[None] if k != "task" else [v]) for k, v in obs.items()}
    local = []
    for _ in range(calls):
        t = time.perf_counter()
        policy.act(batch)
        local.append((time.perf_counter() - t) * 1e3)
    server = PolicyServer(policy, ServerConfig(port=0, token="bench-token"))
    port = server.start()
    remote = []
    try:
        with PolicyClient("127.0.0.1", port, "bench-token") as client:
            for _ in range(20):
                client.infer(obs)  # warm-up
            for _ in range(calls):
                t = time.perf_counter()
                client.infer(obs)
                remote.append((time.perf_counter() - t) * 1e3)
    finally:
        server.stop()
    out = {"in_process": _pct(local), "server": _pct(remote)}
    out["added_p50_ms"] = out["server"]["p50_ms"] - out["in_process"]["p50_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="control steps at 20 Hz (400 = 20 s)")
    p.add_argument("--calls", type=int, default=500, help="policy calls per variant")
    p.add_argument("--venv", type=Path, default=ROOT / ".venv-ros")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
                               "policy_round_trip": bench_policy_round_trip(args.calls)}
    if (args.venv / "ros_env.sh").is_file():
        from stack import RosStack

        with RosStack(args.venv, lifetime_s=300) as stack:
            results["ros_loop"] = bench_loop(stack, args.steps)
    else:
        results["ros_loop"] = {"skipped": f"no ROS venv at {args.venv} (bash scripts/ros_test_env.sh)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results)
    return 0


def _print_table(r: dict[str, Any]) -> None:
    rt = r["policy_round_trip"]
    rows = [("policy in-process p50 / p99 (ms)", f"{rt['in_process']['p50_ms']:.3f} / {rt['in_process']['p99_ms']:.3f}"),
            ("policy via server p50 / p99 (ms)", f"{rt['server']['p50_ms']:.3f} / {rt['server']['p99_ms']:.3f}"),
            ("server added p50 (ms), target <= 2", f"{rt['added_p50_ms']:.3f}")]
    loop = r["ros_loop"]
    if "loop" in loop:
        lp, mo = loop["loop"], loop["command_to_motion"]
        rows += [("loop rate (Hz) / steps", f"{loop['control_hz']:.0f} / {lp['steps']}"),
                 ("period p50 / p99 (ms)", f"{lp['period_p50_ms']:.2f} / {lp['period_p99_ms']:.2f}"),
                 ("jitter p50 / p99 / max (ms), target p99 <= 5",
                  f"{lp['jitter_p50_ms']:.3f} / {lp['jitter_p99_ms']:.3f} / {lp['jitter_max_ms']:.3f}"),
                 ("overruns", str(lp["overruns"])),
                 ("obs->command p50 / p99 (ms)", f"{lp['obs_to_command_p50_ms']:.2f} / {lp['obs_to_command_p99_ms']:.2f}"),
                 ("obs age at command p50 / p99 (ms)", f"{lp['obs_age_p50_ms']:.1f} / {lp['obs_age_p99_ms']:.1f}"),
                 ("command -> first motion p50 / p99 (ms)", f"{mo['p50_ms']:.1f} / {mo['p99_ms']:.1f}")]
    else:
        rows.append(("ROS loop", loop["skipped"]))
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
