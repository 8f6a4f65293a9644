"""Imagined env against the real sim: env steps per second at batch 64, side by side in one run.

    python benchmarks/bench_world_model.py --world_model runs/wm-pick/checkpoints/last [--envs 64]

Both sources step the same random chunks (h actions) from the same seeds, with the cameras the
world model models rendering at its resolution. The sim runs twice: with lazy frames (cameras
rendered only on a chunk's last step, where the policy reads them: the fastest mode that gives
a policy its observations, and what `finetune` uses) and with frames rendered on every step.
The imagined env decodes its frames once per chunk. No policy runs (env throughput only).
Writes ``benchmarks/results/world_model_speed.json``; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def measure(source, chunks: int, envs: int, h: int, action_dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    source.reset(list(range(seed, seed + envs)))
    source.step(rng.uniform(-1, 1, (envs, h, action_dim)).astype(np.float32))  # warm-up
    t0 = time.perf_counter()
    steps = 0
    for _ in range(chunks):
        out = source.step(rng.uniform(-1, 1, (envs, h, action_dim)).astype(np.float32))
        steps += int(out.executed.sum())
    dt = time.perf_counter() - t0
    return {"env_steps": steps, "seconds": round(dt, 3), "env_steps_per_s": round(steps / dt, 1),
            "chunks_per_s": round(chunks * envs / dt, 1)}


def main() -> int:
    import torch

    from vla_rft.sources.vector import VectorEnvSource, _SimEnvFn
    from world_models.model import load_world_model
    from world_models.source import ImaginedSource

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world_model", required=True)
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--envs", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "world_model_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_world_model(args.world_model)
    cfg = model.cfg
    kwargs = {"obs_mode": "rgb", "cameras": list(cfg.cameras), "image_size": int(cfg.image_size[0])}
    rows = {}
    imagined = ImaginedSource(model, args.task, args.envs, kwargs)
    rows["world_model"] = measure(imagined, args.chunks, args.envs, cfg.chunk_size, cfg.action_dim)
    imagined.close()
    for name, lazy in (("sim_lazy_frames", True), ("sim_every_frame", False)):
        sim = VectorEnvSource([_SimEnvFn(args.task, kwargs) for _ in range(args.envs)], cfg.chunk_size, "sync", lazy)
        rows[name] = measure(sim, args.chunks, args.envs, cfg.chunk_size, cfg.action_dim)
        sim.close()
    wm = rows["world_model"]["env_steps_per_s"]
    result = {
        "task": args.task, "envs": args.envs, "chunks": args.chunks, "chunk_size": cfg.chunk_size,
        "cameras": list(cfg.cameras), "image_size": list(cfg.image_size), "torch_threads": args.threads,
        "world_model": args.world_model, "rows": rows,
        "speedup_vs_sim_lazy": round(wm / rows["sim_lazy_frames"]["env_steps_per_s"], 2),
        "speedup_vs_sim_every_frame": round(wm / rows["sim_every_frame"]["env_steps_per_s"], 2),
        "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version(),
                    "note": "one process; run alone on the machine"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in rows.items():
        print(f"{name:18s} {r['env_steps_per_s']:10.1f} env steps/s", file=sys.stderr)
    print(f"speed-up: {result['speedup_vs_sim_lazy']}x over the lazy sim, {result['speedup_vs_sim_every_frame']}x over "
          "rendering every step", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
