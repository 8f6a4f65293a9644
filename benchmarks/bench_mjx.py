"""MJX against the C MuJoCo backend: control steps per second of one state-based task at batch
sizes 1k-4k, side by side in one run, written as JSON.

    python benchmarks/bench_mjx.py                                  # CPU, batches 1024 2048 4096
    python benchmarks/bench_mjx.py --device gpu --steps 20 --out benchmarks/results/bench_mjx_gpu.json

A control step is 50 physics substeps (10 Hz), the same for both backends. MJX steps all envs in
one jitted call (``--batching`` map on CPU, vmap on a GPU, see sims/mjx_env.py); the C backend is
``SimEnv(obs_mode="state")`` stepped in a Python loop over the same number of envs (what the
``sim`` source's sync vector env does per env). Compile time is reported apart and excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach_target")
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--steps", type=int, default=1, help="timed MJX control steps per batch (after the compiling call, which also steps once)")
    p.add_argument("--c_steps", type=int, default=2, help="timed C control steps per env")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--batching", choices=("map", "vmap"), default=None, help="default: map on CPU, vmap on GPU")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. other load on the machine)")
    p.add_argument("--out", default="benchmarks/results/bench_mjx.json")
    return p.parse_args()


def c_steps_per_s(task: str, n: int, steps: int) -> float:
    """Control steps/s of n C envs stepped one after another (zero arm motion, gripper open)."""
    import numpy as np

    from sims.env import SimEnv

    envs = [SimEnv(task, obs_mode="state") for _ in range(n)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    action = np.zeros(7, np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        for env in envs:
            env.step(action)
    return n * steps / (time.perf_counter() - start)


def mjx_steps_per_s(task: str, n: int, steps: int, batching: str | None) -> tuple[float, float]:
    """(control steps/s, compile seconds) of n MJX envs in one jitted call per control step."""
    import jax
    import numpy as np

    from sims.mjx_env import MjxTask

    env = MjxTask(task, batching=batching)
    keys = jax.vmap(jax.random.PRNGKey)(np.arange(n, dtype=np.uint32))
    chunk = jax.numpy.zeros((n, 1, 7))
    start = time.perf_counter()
    state = env.reset(keys)
    state, _ = env.step_chunk(state, chunk)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = env.step_chunk(state, chunk)
    jax.block_until_ready(state)
    return n * steps / (time.perf_counter() - start), compile_s


def main() -> int:
    args = parse()
    if args.device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from sims.mjx_env import default_batching

    batching = args.batching or default_batching()
    rows = []
    for n in args.batches:
        mjx_rate, compile_s = mjx_steps_per_s(args.task, n, args.steps, batching)
        c_rate = c_steps_per_s(args.task, n, args.c_steps)
        rows.append({"num_envs": n, "mjx_steps_per_s": round(mjx_rate, 1), "c_steps_per_s": round(c_rate, 1),
                     "mjx_over_c": round(mjx_rate / c_rate, 3), "mjx_compile_s": round(compile_s, 1)})
        print(f"N={n:5d}  MJX {mjx_rate:9.1f} steps/s  C {c_rate:8.1f} steps/s  "
              f"ratio {mjx_rate / c_rate:.3f}  (compile {compile_s:.0f} s)", flush=True)
    out = {"task": args.task, "control_step": "50 substeps x 2 ms", "device": str(jax.devices()[0]),
           "backend": jax.default_backend(), "batching": batching, "cpu_count": os.cpu_count(),
           "processor": platform.processor() or platform.machine(), "jax": jax.__version__,
           "mjx_timed_steps": args.steps, "c_timed_steps": args.c_steps, "note": args.note,
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
