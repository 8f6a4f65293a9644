"""Does fine-tuning use both cores, and which way helps? One invocation, the variants in turn.

    python benchmarks/bench_cores.py [--minutes 1.5] [--task press_button]

Runs ``vla-rft finetune --config ppo_tiny --policy pretrained:tiny_kp_4task`` for the same
wall-clock budget (no evaluation) once per variant: envs in this process with 1 or 2 torch
threads (``vector sync``), envs in one subprocess each (``vector async``), and envs split over 2
Ray actors (``source ray``). Reports env steps reached, the collection rate, the CPU the run
used (cores busy on average) and writes ``benchmarks/results/cores.json``. Run it on an
otherwise idle machine: the variants share it with nothing else.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "sync_1_thread": ["--vector", "sync", "--num_threads", "1"],
    "sync_2_threads": ["--vector", "sync", "--num_threads", "2"],
    "async_16_procs": ["--vector", "async", "--num_threads", "1"],
    "ray_2_actors": ["--source", "ray", "--ray_workers", "2", "--num_threads", "1"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--task", default="press_button")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cores.json"))
    args = ap.parse_args()
    vla = str(Path(sys.executable).with_name("vla-rft"))
    rows = {}
    with tempfile.TemporaryDirectory() as root:
        for name, extra in VARIANTS.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.time()
            subprocess.run([vla, "finetune", "--config", "ppo_tiny", "--policy", "pretrained:tiny_kp_4task", "--task", args.task,
                            "--minutes", str(args.minutes), "--eval_episodes", "0", "--logging.root", root,
                            "--logging.name", name, "--logging.wandb", "disabled", *extra],
                           check=True, stdout=subprocess.DEVNULL)
            wall = time.time() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            recs = [json.loads(x) for x in (Path(root) / name / "metrics.jsonl").read_text().splitlines()]
            its = [r for r in recs if "iteration_seconds" in r][2:]  # past the warm-up iterations
            rows[name] = {
                "args": " ".join(extra),
                "env_steps": recs[-1]["env_steps"] if "env_steps" in recs[-1] else max(r.get("env_steps", 0) for r in recs),
                "iterations": len([r for r in recs if "iteration_seconds" in r]),
                "collect_steps_per_s": round(statistics.mean(r["rollout/env_steps_per_s"] for r in its)),
                "iteration_seconds": round(statistics.mean(r["iteration_seconds"] for r in its), 3),
                "wall_seconds": round(wall, 1),
                "cores_busy": round(cpu / wall, 2),  # Ray's actors run outside this process tree: not counted
            }
            print(name, rows[name], file=sys.stderr, flush=True)
    base = rows["sync_1_thread"]["env_steps"]
    for r in rows.values():
        r["env_steps_vs_sync_1_thread"] = round(r["env_steps"] / base, 3)
    res = {"task": args.task, "minutes": args.minutes, "variants": rows,
           "note": "same budget per variant, run one after another in one invocation on an idle 2-core machine"}
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v["env_steps_vs_sync_1_thread"] for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
