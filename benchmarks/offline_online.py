"""Offline -> online chunked TD against PPO from the same start (issue "Offline reinforcement
fine-tuning", benchmark 3).

From the shipped reference policy on the held-out pick_cube, per training seed:

1. ``offline``: chunked TD (best-of-N actor, critic over the policy's chunk) on 50 expert
   demonstrations plus 200 rollouts of the start, zero env steps, for ``--offline_minutes``
   (the same run as ``benchmarks/offline_td.py``'s ``qc``); its 100-episode evaluation is the
   offline result;
2. ``online``: the offline checkpoint (critic included) continues online for ``--minutes``:
   sampled chunks of the best-of-N actor from the sim rollout source, RLPD 50/50 batches of
   online and offline transitions (``finetune --algo chunked-td --iterations 0 --online_steps``);
3. ``ppo``: PPO (``ppo_tiny``) from the same reference start for the same ``--minutes``, with the
   same envs per iteration (16 envs x 10 chunks), so iterations are the same env steps.

Both online routes evaluate every ``--eval_every`` iterations (50 episodes, the same seeds), which
draws success against online env steps; the ``last`` checkpoint of each run is then evaluated on
100 episodes (Wilson intervals, 3 seeds pooled). The "dip" is the lowest online evaluation minus
the offline result of the same seed. Figures go to ``benchmarks/results/offline_online.json``, a
table to ``.md`` and the curve to ``docs/images/offline_online.png``::

    python benchmarks/offline_online.py              # about 80 minutes here (3 runs side by side)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline_td import CONFIGS, EVAL_SEED, TASK, collect, evaluate_start, write_results
from retention import ROOT, START, vla, wilson

COMMON = ["--task", TASK, "--eval_seed", str(EVAL_SEED), "--retain_tasks", "[]", "--logging.wandb", "disabled",
          "--save_every", "1000"]


def _cmd(args: argparse.Namespace, kind: str, seed: int, data: list[str], runs: Path) -> list[str]:
    name = f"{kind}-s{seed}"
    log = ["--seed", str(seed), "--logging.root", str(runs), "--logging.name", name]
    if kind == "offline":
        return ["finetune", *CONFIGS["qc"], "--data", json.dumps(data), "--policy", START, "--iterations", "1000000",
                "--minutes", str(args.offline_minutes), "--eval_every", "0", "--eval_episodes", str(args.episodes),
                *COMMON, *log]
    online = ["--minutes", str(args.minutes), "--eval_every", str(args.eval_every), "--eval_episodes",
              str(args.curve_episodes), "--num_envs", "16", "--rollout_len", "10"]
    if kind == "online":
        return ["finetune", *CONFIGS["qc"], "--data", json.dumps(data), "--policy",
                str(runs / f"offline-s{seed}" / "checkpoints" / "last"), "--iterations", "0", "--online_steps",
                "100000000", *online, *COMMON, *log]
    return ["finetune", "--config", "ppo_tiny", "--policy", START, "--iterations", "100000", *online, *COMMON, *log]


def _curve(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{"env_steps": int(r.get("env_steps", 0)), "iteration": int(r["step"]), "success": r["eval/success_rate"],
             "time": r.get("time")} for r in rows if "eval/success_rate" in r]


def _run(args: argparse.Namespace, kind: str, seed: int, data: list[str], runs: Path) -> dict:
    """Train (cached by result.json), then evaluate ``last`` on ``--episodes`` episodes. ``online``
    continues this seed's ``offline`` checkpoint: main runs every offline run first."""
    name = f"{kind}-s{seed}"
    path = runs / name / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.time()
    s = vla(_cmd(args, kind, seed, data, runs), runs / f"{name}.log")
    last = runs / name / "checkpoints" / "last"
    if kind == "offline":
        ev = {"successes": round(s["eval/success_rate"] * args.episodes), "episodes": args.episodes}
    else:
        ev = vla(["eval", "--policy", str(last), "--tasks", json.dumps([TASK]), "--episodes", str(args.episodes),
                  "--seed", str(EVAL_SEED), "--logging.root", str(runs), "--logging.name", f"{name}-eval"],
                 runs / f"{name}-eval.log")
    result = {"kind": kind, "seed": seed, "successes": ev["successes"], "episodes": ev["episodes"],
              "iterations": s["iteration"], "env_steps": s.get("env_steps", 0), "train_seconds": round(time.time() - t0),
              "curve": _curve(runs / name)}
    path.write_text(json.dumps(result, indent=1))
    print(f"{name}: {TASK} {ev['successes']}/{ev['episodes']} after {s['iteration']} iterations, "
          f"{result['env_steps']} env steps ({result['train_seconds']} s)", file=sys.stderr, flush=True)
    return result


def _plot(rows: dict, offline: dict[int, float], start: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"online": "tab:blue", "ppo": "tab:orange"}
    for kind, runs in rows.items():
        for i, r in enumerate(runs):
            xs = [p["env_steps"] for p in r["curve"]]  # the first evaluation is at 0 online steps
            ys = [100 * p["success"] for p in r["curve"]]
            if kind == "online":  # the seed's offline result on the 100 final-evaluation episodes
                ax.plot([0], [100 * offline[r["seed"]]], color=colors[kind], marker="x", ls="none",
                        label="offline result (100 episodes)" if i == 0 else None)
            ax.plot(xs, ys, color=colors[kind], alpha=0.8, marker=".",
                    label=("offline -> online chunked TD" if kind == "online" else "PPO from the start") if i == 0
                    else None)
    ax.axhline(100 * start, color="gray", ls=":", label="start (100 episodes)")
    ax.set_xlabel("online env steps")
    ax.set_ylabel(f"{TASK} success (%), 50-episode evaluations")
    ax.set_title("Offline -> online chunked TD vs PPO, 3 seeds each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--offline_minutes", type=float, default=3.0)
    ap.add_argument("--minutes", type=float, default=30.0, help="online wall-clock budget of each online run")
    ap.add_argument("--eval_every", type=int, default=30, help="online iterations between curve evaluations")
    ap.add_argument("--curve_episodes", type=int, default=50)
    ap.add_argument("--episodes", type=int, default=100, help="episodes of the final evaluations")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--demos", type=int, default=50)
    ap.add_argument("--rollouts", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "runs" / "offline_online"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "offline_online.json"))
    ap.add_argument("--png", default=str(ROOT / "docs" / "images" / "offline_online.png"))
    args = ap.parse_args()
    out = Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = collect(out, args.demos, args.rollouts)
    start = evaluate_start(runs, args.episodes)
    # the offline runs first (short), then the 30-minute runs interleaved so each batch mixes both routes
    with ThreadPoolExecutor(args.jobs) as pool:
        offline = list(pool.map(lambda s: _run(args, "offline", s, data, runs), args.seeds))
    jobs = [(k, s) for s in args.seeds for k in ("online", "ppo")]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: _run(args, j[0], j[1], data, runs), jobs))
    rows: dict[str, list[dict]] = {"offline": offline}
    for r in results:
        rows.setdefault(r["kind"], []).append(r)
    off = {r["seed"]: r["successes"] / r["episodes"] for r in offline}
    summary = {"start": {"successes": start["successes"], "episodes": start["episodes"],
                         "ci95": wilson(start["successes"], start["episodes"])}}
    for kind, rs in rows.items():
        k, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        summary[kind] = {"successes": k, "episodes": n, "success": k / n, "ci95": wilson(k, n),
                         "per_seed": {str(r["seed"]): r["successes"] / r["episodes"] for r in rs},
                         "env_steps": [r["env_steps"] for r in rs], "iterations": [r["iterations"] for r in rs]}
    dips = {str(r["seed"]): round(100 * (min([p["success"] for p in r["curve"]], default=off[r["seed"]])
                                         - off[r["seed"]]), 1) for r in rows["online"]}
    summary["online"]["dip_points"] = dips  # lowest curve evaluation (50 episodes) minus the seed's offline result
    p0 = start["successes"] / start["episodes"]
    lines = [f"| route | {TASK} success (pooled, last) | 95% CI | per seed | gain over start | online env steps |",
             "|---|---|---|---|---|---|",
             (f"| start | {100 * p0:.1f}% ({start['successes']}/{start['episodes']}) | "
              f"{100 * summary['start']['ci95'][0]:.0f}–{100 * summary['start']['ci95'][1]:.0f}% | – | – | 0 |")]
    for kind, label in (("offline", f"offline chunked TD ({args.offline_minutes:g} min)"),
                        ("online", f"offline -> online (+{args.minutes:g} min online)"),
                        ("ppo", f"PPO ({args.minutes:g} min)")):
        r = summary[kind]
        seeds = ", ".join(f"{100 * v:.0f}%" for v in r["per_seed"].values())
        steps = ", ".join(str(s) for s in r["env_steps"])
        lines.append(f"| {label} | {100 * r['success']:.1f}% ({r['successes']}/{r['episodes']}) | "
                     f"{100 * r['ci95'][0]:.0f}–{100 * r['ci95'][1]:.0f}% | {seeds} | "
                     f"{100 * (r['success'] - p0):+.1f} | {steps} |")
    md = "\n".join(lines) + f"\n\nLargest early dip below the offline result (points, per seed): {dips}\n"
    _plot({k: rows[k] for k in ("online", "ppo")}, off, p0, Path(args.png))
    result = {"task": TASK, "start_policy": START, "data": data, "offline_minutes": args.offline_minutes,
              "online_minutes": args.minutes, "seeds": args.seeds, "episodes": args.episodes,
              "curve_episodes": args.curve_episodes, "eval_seed": EVAL_SEED, "summary": summary, "runs": rows,
              "machine": {"cpus": 2, "runs_side_by_side": args.jobs}, "total_seconds": round(time.time() - t0, 1),
              "command": "python benchmarks/offline_online.py " + " ".join(sys.argv[1:])}
    write_results(Path(args.results), result, md.rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
