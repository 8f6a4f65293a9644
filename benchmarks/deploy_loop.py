"""The deployment loop on the MuJoCo robot (issue "Offline reinforcement fine-tuning", benchmark 4):
deployed episodes -> chunked TD -> a better policy, measured.

1. ``deploy``: the shipped reference policy runs on the simulated arm's held-out pick_cube task
   through ``vla-rft deploy`` (safety filter, chunk executor, LeRobotDataset logging) with the
   scripted supervisor (``--teleop expert``): the task's expert takes over for 15 steps whenever
   the policy made no progress for 20 steps, and those frames are flagged ``intervention``;
2. on the deployed episodes only, from the same start, for ``--minutes`` each (3 training seeds):
   ``qc``, chunked TD (best-of-N actor, critic over the policy's chunk, success reward);
   ``qc-rlif`` and ``bcq-rlif``, chunked TD with RLIF's intervention penalty (reward -1 on the
   policy's frame before each takeover) and the best-of-N or BC + Q actor; ``bc``, behaviour
   cloning of the start on the same episodes, for reference;
3. every policy is evaluated on the same 100 seeded pick_cube episodes (``vla-rft eval``'s seeds,
   disjoint from the deployed scenes), pooled over seeds with Wilson intervals;
4. ``redeploy``: the seed-0 policy of the best chunked-TD config is deployed again on the same
   scenes with the same supervisor: the supervisor's takeovers on the new policy against the start's.

The whole sequence as shell commands is in docs/offline-rl.md. Figures go to
``benchmarks/results/deploy_loop.json`` and a table to ``.md``::

    python benchmarks/deploy_loop.py              # about 35 minutes here (2 runs side by side)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline_td import CONFIGS, EVAL_SEED, TASK, evaluate_start, pooled_rows, run, write_results
from retention import ROOT, START, vla

ROBOT = "configs/robots/mujoco_pick_cube.yaml"
# RLIF: the supervisor's takeovers as a penalty on the chunk before them (the deployed data's only
# failure signal: with the supervisor every episode ends in success)
CONFIGS["qc-rlif"] = [*CONFIGS["qc"], "--chunked_td.intervention_penalty", "1"]
CONFIGS["bcq-rlif"] = [*CONFIGS["bcq"], "--chunked_td.intervention_penalty", "1"]
LABELS = {"start": "start (the deployed policy)", "qc": "chunked TD, best-of-N", "bc": "BC",
          "qc-rlif": "chunked TD, best-of-N, RLIF penalty", "bcq-rlif": "chunked TD, BC + Q, RLIF penalty"}


def deploy(out: Path, name: str, policy: str, episodes: int) -> dict:
    """``vla-rft deploy`` with the expert supervisor (cached by the dataset's summary)."""
    path = out / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    root = out / name
    if root.exists():  # an interrupted earlier deploy: start over
        shutil.rmtree(root)
    t0 = time.time()
    s = vla(["deploy", "--robot", str(ROOT / ROBOT), "--policy", policy, "--teleop", "expert", "--episodes",
             str(episodes), "--realtime", "false", "--out", str(root)], out / f"{name}.log")
    res = s["results"]
    frames = sum(r["frames"] for r in res)
    summary = {"policy": policy, "episodes": len(res), "successes": s["successes"], "frames": frames,
               "interventions": sum(r["interventions"] for r in res),
               "episodes_with_intervention": sum(r["interventions"] > 0 for r in res),
               "successes_without_intervention": sum(r["success"] and r["interventions"] == 0 for r in res),
               "seconds": round(time.time() - t0, 1), "dataset": str(root)}
    summary["intervention_rate"] = summary["interventions"] / max(frames, 1)
    path.write_text(json.dumps(summary, indent=1))
    print(f"{name}: {summary['successes']}/{len(res)} episodes successful with the supervisor, "
          f"{summary['interventions']} of {frames} frames by the expert ({summary['seconds']} s)",
          file=sys.stderr, flush=True)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deploy_episodes", type=int, default=100)
    ap.add_argument("--configs", nargs="+", default=["qc", "qc-rlif", "bcq-rlif", "bc"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget of every run")
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "runs" / "deploy_loop"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "deploy_loop.json"))
    args = ap.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    first = deploy(out, "deployed", START, args.deploy_episodes)
    data = [first["dataset"]]
    start = evaluate_start(out / "runs", args.episodes)
    jobs = [(c, s) for s in args.seeds for c in args.configs]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda j: run(out, j[0], j[1], data, args), jobs))
    rows = pooled_rows(start, jobs, summaries, args.episodes)
    second, best = None, None
    td = [c for c in args.configs if c != "bc"]
    if td and args.seeds:
        best = max(td, key=lambda c: rows[c]["success"])
        ckpt = out / "runs" / f"{best}-s{args.seeds[0]}" / "checkpoints" / "last"
        second = deploy(out, f"redeployed-{best}", str(ckpt), args.deploy_episodes)
    p0 = rows["start"]["success"]
    lines = [f"| policy | {TASK} success, eval (pooled) | 95% CI | per seed | gain over start | updates |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        seeds = ", ".join(f"{100 * v:.0f}%" for v in r.get("per_seed", {}).values()) or "–"
        ups = ", ".join(str(u) for u in r.get("updates", [])) or "–"
        gain = "–" if name == "start" else f"{100 * (r['success'] - p0):+.1f}"
        lines.append(f"| {LABELS.get(name, name)} | {100 * r['success']:.1f}% ({r['successes']}/{r['episodes']}) | "
                     f"{100 * r['ci95'][0]:.0f}–{100 * r['ci95'][1]:.0f}% | {seeds} | {gain} | {ups} |")
    lines += ["", ("| deployment (expert supervisor, same scenes) | episodes | successes | frames | expert frames "
                   "| episodes with a takeover | successes without a takeover |"), "|---|---|---|---|---|---|---|"]
    for label, d in (("start", first), (f"{LABELS.get(str(best), best)}, seed {args.seeds[0]}", second)):
        if d is not None:
            lines.append(f"| {label} | {d['episodes']} | {d['successes']} | {d['frames']} | {d['interventions']} "
                         f"({100 * d['intervention_rate']:.1f}%) | {d['episodes_with_intervention']} | "
                         f"{d['successes_without_intervention']} |")
    md = "\n".join(lines)
    result = {"task": TASK, "start_policy": START, "robot": ROBOT, "deployed": first, "redeployed": second,
              "redeployed_config": best, "configs": {c: CONFIGS[c] for c in args.configs},
              "minutes": args.minutes, "seeds": args.seeds, "episodes": args.episodes, "eval_seed": EVAL_SEED,
              "rows": rows, "machine": {"cpus": 2, "runs_side_by_side": args.jobs},
              "total_seconds": round(time.time() - t0, 1),
              "command": "python benchmarks/deploy_loop.py " + " ".join(sys.argv[1:])}
    write_results(Path(args.results), result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
