"""The README's main job as a new user runs it: wall time, peak memory and the figures it reports.

    python benchmarks/quickstart.py [--root /tmp/qs-bench] [-- QUICKSTART_ARGS...]

Runs ``vla-rft quickstart`` in a subprocess (fresh run directory), samples the proportional set
size (PSS, shared pages split between processes) of its whole process tree once a second (the
fine-tuning envs live in subprocesses, so the parent's own maximum RSS undercounts), and writes
``benchmarks/results/quickstart.json``: wall seconds, peak tree PSS, peak tree RSS, per-stage
times, CPU use, and the summary's before / after figures with their intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "quickstart.json"


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _memory_kb(pids: list[int]) -> tuple[int, int]:
    pss = rss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/qs-bench", help="parent of the quickstart's run directory (must not hold one)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="extra quickstart arguments after --")
    args = ap.parse_args()
    extra = [a for a in args.rest if a != "--"]
    if (Path(args.root) / "quickstart").exists():
        sys.exit(f"{args.root}/quickstart exists: the benchmark measures a fresh run")
    vla = str(Path(sys.executable).with_name("vla-rft"))
    cmd = [vla, "quickstart", "--root", args.root, "--json", *extra]
    peak = {"pss_kb": 0, "rss_kb": 0}
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def sample() -> None:
        while proc.poll() is None:
            pss, rss = _memory_kb(_tree(proc.pid))
            peak["pss_kb"], peak["rss_kb"] = max(peak["pss_kb"], pss), max(peak["rss_kb"], rss)
            time.sleep(1.0)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, _ = proc.communicate()
    wall = time.time() - t0
    th.join(timeout=5)
    if proc.returncode != 0:
        sys.exit(f"quickstart failed with status {proc.returncode}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = json.loads(stdout)
    res = {
        "command": " ".join(["vla-rft quickstart", *extra]),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "mean_cores_busy": round((usage.ru_utime + usage.ru_stime) / wall, 2),
        "peak_tree_pss_mb": round(peak["pss_kb"] / 1024),
        "peak_tree_rss_mb": round(peak["rss_kb"] / 1024),
        "stage_seconds": s["seconds"],
        "target": s["target"], "algo": s["algo"], "env_steps": s["env_steps"], "iterations": s["iterations"],
        "target_before": s["target_before"], "target_after": s["target_after"], "gain_points": s["gain_points"],
        "retention_before": s["retention_before"], "retention_after": s["retention_after"],
        "retention_ratio": s["retention_ratio"],
        "per_task": {t: {"before": s["before"]["per_task"][t], "after": s["after"]["per_task"][t]} for t in s["before"]["per_task"]},
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("wall_seconds", "peak_tree_pss_mb", "mean_cores_busy", "gain_points",
                                          "retention_ratio")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
