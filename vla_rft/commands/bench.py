"""``vla-rft bench sim``: simulator speed, ours against robosuite, measured side by side.

Everything runs pinned to one CPU core (``sched_setaffinity``) with llvmpipe limited to one
render thread, so the figures compare like with like on a shared machine. robosuite runs in a
child process (its logging writes to stdout, and its import must not disturb ours).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class BenchSimConfig:
    """Measure raw mj_step rate, env steps/s (state-only and one camera) and robosuite Lift's rates."""

    task: str = "pick_cube"
    """Task whose scene is measured."""
    seconds: float = 4.0
    """Wall-clock seconds per measurement."""
    image_size: int = 64
    """Camera resolution for the camera measurements (ours and robosuite's)."""
    robosuite: bool = True
    """Also measure robosuite Lift (Panda) when the robosuite extra is installed."""
    cpu: int = 0
    """CPU core to pin the benchmark to."""
    out: str | None = None
    """Also write the figures as JSON to this path (e.g. benchmarks/results/sim.json)."""
    json: bool = False
    """Print one JSON object with the figures on stdout."""


def pin_to_one_core(cpu: int) -> None:
    """Pin this process (and its children) to one core; llvmpipe renders with one thread."""
    os.environ["LP_NUM_THREADS"] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _timed(step, seconds: float, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10):
            step()
        n += 10
    return n / elapsed


def measure_mj_step(task: str, seconds: float) -> tuple[float, int]:
    """Raw ``mj_step`` rate of the task's scene (physics only) and the env's substeps."""
    import mujoco

    import sims
    from sims.scene import SUBSTEPS

    env = sims.make_env(task, obs_mode="state")
    env.reset(seed=0)
    m, d = env.unwrapped.physics.model, env.unwrapped.physics.data
    chunk = 100
    rate = _timed(lambda: mujoco.mj_step(m, d, nstep=chunk), seconds) * chunk
    env.close()
    return rate, SUBSTEPS


def measure_env(task: str, seconds: float, *, cameras: list[str], image_size: int) -> float:
    """Env steps/s with seeded random actions, resets included."""
    import numpy as np

    import sims

    env = sims.make_env(task, obs_mode="rgb" if cameras else "state", cameras=cameras, image_size=image_size)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(4096, env.action_space.shape[0])).astype(np.float32)
    env.reset(seed=0)
    i = 0

    def step() -> None:
        nonlocal i
        _, _, term, trunc, _ = env.step(actions[i % len(actions)])
        i += 1
        if term or trunc:
            env.reset(seed=i)

    rate = _timed(step, seconds)
    env.close()
    return rate


_ROBOSUITE_CHILD = r"""
import json, os, sys, time, numpy as np
seconds, size = float(sys.argv[1]), int(sys.argv[2])
import robosuite as suite
def rate(camera):
    kw = dict(use_camera_obs=True, has_offscreen_renderer=True, camera_names=["agentview"],
              camera_heights=size, camera_widths=size) if camera else dict(use_camera_obs=False, has_offscreen_renderer=False)
    env = suite.make("Lift", robots="Panda", has_renderer=False, horizon=10**7, ignore_done=True, **kw)
    env.reset(); a = np.zeros(env.action_dim)
    for _ in range(20): env.step(a)  # numba JIT and renderer warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(a); n += 1
    r = n / (time.perf_counter() - t0); env.close(); return r
print("ROBOSUITE_JSON " + json.dumps({"state": rate(False), "camera": rate(True)}))
"""


def measure_robosuite(seconds: float, image_size: int) -> dict[str, float] | None:
    """robosuite Lift (Panda, default controller, 20 Hz) steps/s without and with one camera."""
    try:
        import importlib.util

        if importlib.util.find_spec("robosuite") is None:
            return None
    except ValueError:
        return None
    proc = subprocess.run([sys.executable, "-c", _ROBOSUITE_CHILD, str(seconds), str(image_size)],
                          capture_output=True, text=True, timeout=600, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("ROBOSUITE_JSON "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"robosuite benchmark failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")


def bench_sim(cfg: BenchSimConfig) -> dict[str, Any]:
    pin_to_one_core(cfg.cpu)
    mj_rate, substeps = measure_mj_step(cfg.task, cfg.seconds)
    state = measure_env(cfg.task, cfg.seconds, cameras=[], image_size=cfg.image_size)
    camera = measure_env(cfg.task, cfg.seconds, cameras=["front"], image_size=cfg.image_size)
    rs = measure_robosuite(cfg.seconds, cfg.image_size) if cfg.robosuite else None
    return {
        "mj_step_per_s": mj_rate,
        "env_steps_per_s_state": state,
        "env_steps_per_s_camera": camera,
        "robosuite_steps_per_s_state": rs["state"] if rs else None,
        "robosuite_steps_per_s_camera": rs["camera"] if rs else None,
        "ratio_camera_vs_robosuite": camera / rs["camera"] if rs else None,
        "ratio_state_vs_limit": state / (mj_rate / substeps),
        "substeps": substeps,
        "task": cfg.task,
        "image_size": cfg.image_size,
        "cpu_cores_used": 1,
    }


def run_sim(cfg: BenchSimConfig) -> int:
    from vla_rft.checkpoint import atomic_write_text
    from vla_rft.cli import print_json

    res = bench_sim(cfg)
    if cfg.out:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
        atomic_write_text(cfg.out, json.dumps(res, indent=2) + "\n")
    if cfg.json:
        print_json(res)
        return 0
    fmt = lambda v: "n/a" if v is None else f"{v:,.1f}"
    print(f"scene: {cfg.task}, {res['substeps']} substeps per env step, {cfg.image_size}x{cfg.image_size} camera, 1 core")
    for k in ("mj_step_per_s", "env_steps_per_s_state", "env_steps_per_s_camera",
              "robosuite_steps_per_s_state", "robosuite_steps_per_s_camera"):
        print(f"  {k:32s} {fmt(res[k])}")
    print(f"  ours camera / robosuite camera   {fmt(res['ratio_camera_vs_robosuite'])}x (target >= 10)")
    print(f"  ours state / mj_step limit       {fmt(res['ratio_state_vs_limit'] and 100 * res['ratio_state_vs_limit'])}% (target >= 50%)")
    return 0
