"""Offline chunked TD on pick_cube (issue "Offline reinforcement fine-tuning", benchmark 1 and
ablations): from the shipped reference policy, with 50 expert demonstrations plus 200 rollouts
of that policy (successes and failures) and zero online steps, compare under one wall-clock
budget per run:

- ``start``: the reference policy itself;
- ``bc``: behaviour cloning of the start on the same data (``finetune --algo sft``);
- ``qc``: chunked TD, best-of-N actor (Q-chunking's QC, N = 32), critic over the policy's chunk h = 8;
- ablations: ``qc-h1`` (a one-step critic), ``qc-calql`` (Cal-QL alpha 0.5), ``bcq`` (BC + Q actor).

Every run is evaluated on the same 100 seeded pick_cube episodes; 3 training seeds each, pooled
(Wilson intervals). Figures go to ``benchmarks/results/offline_td.json`` and a markdown table to
``benchmarks/results/offline_td.md``::

    python benchmarks/offline_td.py                       # about 40 minutes here with --jobs 2
    python benchmarks/offline_td.py --configs qc bc       # the headline comparison only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retention import ROOT, START, vla, wilson

TASK = "pick_cube"
EVAL_SEED = 100_000
CONFIGS: dict[str, list[str]] = {
    "bc": ["--algo", "sft"],
    "qc": ["--algo", "chunked-td"],
    "qc-h1": ["--algo", "chunked-td", "--chunked_td.horizon", "1"],
    "qc-calql": ["--algo", "chunked-td", "--chunked_td.cal_ql_alpha", "0.5"],
    "bcq": ["--algo", "chunked-td", "--chunked_td.actor", "bc_q"],
}


def collect(out: Path, demos: int, rollouts: int) -> list[str]:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    jobs = [("expert", ["--episodes", str(demos), "--seed", "700000"]),
            ("rollouts", ["--episodes", str(rollouts), "--seed", "710000", "--policy", START])]
    roots = []
    for name, extra in jobs:
        root = data / name
        if not (root / "meta" / "info.json").is_file():
            print(f"collecting {name} ({extra[1]} episodes of {TASK})", file=sys.stderr, flush=True)
            s = vla(["collect", "--task", TASK, "--out", str(root), *extra], data / f"{name}.log")
            print(f"  success {s['success_rate']:.2f}, {s['episodes_written']} episodes written", file=sys.stderr)
        roots.append(str(root))
    return roots


def run(out: Path, config: str, seed: int, data: list[str], args: argparse.Namespace) -> dict:
    name = f"{config}-s{seed}"
    path = out / "runs" / name / "summary.json"
    if path.is_file():
        return json.loads(path.read_text())
    cmd = ["finetune", *CONFIGS[config], "--data", json.dumps(data), "--policy", START, "--task", TASK,
           "--iterations", "1000000", "--minutes", str(args.minutes), "--seed", str(seed), "--eval_every", "0",
           "--eval_episodes", str(args.episodes), "--retain_tasks", "[]", "--eval_seed", str(EVAL_SEED),
           "--save_every", "1000", "--logging.root", str(out / "runs"), "--logging.name", name,
           "--logging.wandb", "disabled"]
    t0 = time.time()
    s = vla(cmd, out / "runs" / f"{name}.log")
    print(f"{name}: {TASK} {s['eval/success_rate']:.2f} after {s['iteration']} updates ({time.time() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    return s


def evaluate_start(runs: Path, episodes: int) -> dict:
    """The start policy on the benchmark's evaluation episodes (cached in ``runs/start.json``)."""
    path = runs / "start.json"
    if not path.is_file():
        path.write_text(json.dumps(vla(["eval", "--policy", START, "--tasks", json.dumps([TASK]), "--episodes",
                                        str(episodes), "--seed", str(EVAL_SEED), "--logging.root", str(runs),
                                        "--logging.name", "start-eval"], runs / "start.log")))
    return json.loads(path.read_text())


def pooled_rows(start: dict, jobs: list[tuple[str, int]], summaries: list[dict], episodes: int) -> dict[str, dict]:
    """Successes per config pooled over seeds (with the start's row), Wilson intervals."""
    rows: dict[str, dict] = {"start": {"successes": start["successes"], "episodes": start["episodes"]}}
    for (config, seed), s in zip(jobs, summaries):
        r = rows.setdefault(config, {"successes": 0, "episodes": 0, "per_seed": {}, "updates": []})
        k = round(s["eval/success_rate"] * episodes)
        r["successes"] += k
        r["episodes"] += episodes
        r["per_seed"][str(seed)] = k / episodes
        r["updates"].append(s["iteration"])
    for r in rows.values():
        r["success"] = r["successes"] / r["episodes"]
        r["ci95"] = wilson(r["successes"], r["episodes"])
    return rows


def write_results(path: Path, result: dict, md: str) -> None:
    """The figures as JSON at ``path`` and the table beside it (``.md``), printed too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    path.with_suffix(".md").write_text(md + "\n")
    print(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget of every run")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--demos", type=int, default=50)
    ap.add_argument("--rollouts", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "runs" / "offline_td"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "offline_td.json"))
    args = ap.parse_args()
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = collect(out, args.demos, args.rollouts)
    start = evaluate_start(out / "runs", args.episodes)
    jobs = [(c, s) for s in args.seeds for c in args.configs]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda j: run(out, j[0], j[1], data, args), jobs))
    rows = pooled_rows(start, jobs, summaries, args.episodes)
    lines = [f"| config | {TASK} success (pooled) | 95% CI | per seed | updates |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        seeds = ", ".join(f"{100 * v:.0f}%" for v in r.get("per_seed", {}).values()) or "–"
        ups = ", ".join(str(u) for u in r.get("updates", [])) or "–"
        lines.append(f"| {name} | {100 * r['success']:.1f}% ({r['successes']}/{r['episodes']}) | "
                     f"{100 * r['ci95'][0]:.0f}–{100 * r['ci95'][1]:.0f}% | {seeds} | {ups} |")
    md = "\n".join(lines)
    result = {"task": TASK, "start_policy": START, "data": data, "minutes": args.minutes, "seeds": args.seeds,
              "episodes": args.episodes, "eval_seed": EVAL_SEED, "configs": {c: CONFIGS[c] for c in args.configs},
              "rows": rows, "total_seconds": round(time.time() - t0, 1),
              "command": "python benchmarks/offline_td.py " + " ".join(sys.argv[1:])}
    write_results(Path(args.results), result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
