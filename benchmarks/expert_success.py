"""Expert success of every task through `vla-rft collect` (100 seeded episodes each).

    python benchmarks/expert_success.py [--episodes 100] [--root data/demos]

Writes benchmarks/results/expert_success.json and prints a markdown table (docs/tasks.md).
The datasets it writes (one LeRobotDataset per task under --root) are the demonstrations the
pretraining presets use.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--root", default="data/demos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="*", default=None, help="default: every built-in task (robosuite's by name)")
    args = ap.parse_args()
    import sims

    tasks = args.tasks or [s.name for s in sims.list_tasks() if s.family != "robosuite"]
    rows = []
    for task in tasks:
        out = Path(args.root) / task
        if out.exists():
            shutil.rmtree(out)
        t0 = time.time()
        cmd = [sys.executable, "-m", "vla_rft.cli", "collect", "--task", task, "--episodes", str(args.episodes),
               "--seed", str(args.seed), "--out", str(out), "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout)
        res["seconds"] = round(time.time() - t0, 1)
        rows.append(res)
        print(f"| {task} | {res['success_rate']:.2f} | [{res['ci95'][0]:.3f}, {res['ci95'][1]:.3f}] | "
              f"{res['episodes']} | {res['seconds']} |", flush=True)
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/expert_success.json").write_text(json.dumps(
        {"command": f"python benchmarks/expert_success.py --episodes {args.episodes} --seed {args.seed}",
         "seeds": f"{args.seed}..{args.seed + args.episodes - 1}", "rows": rows}, indent=2) + "\n")
    return 0 if all(r["success_rate"] >= 0.95 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
