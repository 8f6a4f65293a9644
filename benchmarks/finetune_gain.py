"""Online fine-tuning gain benchmark (issue "Online reinforcement fine-tuning"): PPO and GRPO on a
task held out of pretraining, under a wall-clock budget, several seeds, then a held-out
evaluation of the starting and the fine-tuned policies, nominal and under each perturbation level.

    python benchmarks/finetune_gain.py --policy runs/kp4-s0/checkpoints/last --task pick_cube \\
        --algos ppo grpo --seeds 0 1 2 --minutes 60 --parallel 2

1. Training: ``vla-rft finetune --config CONFIG_<ALGO> --policy P --task T --seed S
   --minutes M --logging.name gain-<algo>-<task>-s<S>`` per (algo, seed), ``--parallel`` at a
   time, pinned to the cores round robin when they divide evenly (else unpinned). A run whose
   summary.json exists is kept (rerun-safe); one with only checkpoints/last is resumed.
2. Evaluation: the starting policy and each run's ``checkpoints/last`` (``--checkpoint best``:
   the one chosen on the periodic-evaluation seeds, a validation set), ``--episodes`` episodes
   per condition, seeds
   ``--eval-seed``+ (disjoint from training resets and from the periodic evaluation's 100000+),
   deterministic chunks executed open loop, on ``none`` and each ``--levels`` level.
3. Figures: ``benchmarks/results/finetune_gain.json`` (every evaluation with its Wilson interval,
   gains in points per run, their mean and spread over seeds) and a learning-curve PNG (periodic
   evaluation success against env steps and against wall-clock minutes).

``--skip-train`` evaluates and plots existing runs only; ``--plot-only`` redraws the PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEVELS = ["visual", "semantic", "execution", "dynamics"]


def run_name(algo: str, task: str, seed: int, tag: str) -> str:
    return f"gain-{algo}-{task}-s{seed}{tag}"


# ------------------------------------------------------------------------------ training
def _train_cmd(args: argparse.Namespace, algo: str, seed: int) -> list[str]:
    vla = str(Path(sys.executable).with_name("vla-rft"))
    name = run_name(algo, args.task, seed, args.tag)
    run_dir = Path(args.runs_root) / name
    if (run_dir / "checkpoints" / "last" / "meta.json").is_file():
        return [vla, "finetune", "--resume", str(run_dir), "--json"]
    cmd = [vla, "finetune", "--config", getattr(args, f"config_{algo}"), "--policy", args.policy, "--task", args.task,
           "--seed", str(seed), "--minutes", str(args.minutes), "--logging.root", args.runs_root,
           "--logging.name", name, "--json"]
    return cmd + list(args.finetune_args or [])


def train_all(args: argparse.Namespace) -> None:
    jobs = []
    for algo in args.algos:
        for seed in args.seeds:
            run_dir = Path(args.runs_root) / run_name(algo, args.task, seed, args.tag)
            if (run_dir / "summary.json").is_file():
                print(f"[gain] {run_dir.name}: done, kept", file=sys.stderr)
                continue
            jobs.append((run_dir, _train_cmd(args, algo, seed)))
    running: list[tuple[subprocess.Popen, Path, Any, int]] = []
    cpus = os.cpu_count() or 1
    started = 0
    while jobs or running:
        while jobs and len(running) < args.parallel:
            run_dir, cmd = jobs.pop(0)
            # round robin when the runs divide the cores evenly; otherwise (3 runs on 2 cores) the
            # scheduler balances them better than any pinning could
            core = started % cpus if args.parallel % cpus == 0 or cpus % args.parallel == 0 else None
            started += 1
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(run_dir.parent / f"{run_dir.name}.log", "a")  # noqa: SIM115
            print(f"[gain] start {run_dir.name} on core {core}: {' '.join(cmd)}", file=sys.stderr)
            pinned = ["taskset", "-c", str(core), *cmd] if core is not None else cmd
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            running.append((subprocess.Popen(pinned, stdout=log, stderr=log, env=env, cwd=ROOT),
                            run_dir, log, core))
        time.sleep(5)
        for item in list(running):
            proc, run_dir, log, core = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            print(f"[gain] {run_dir.name} exited {proc.returncode}", file=sys.stderr)
            if proc.returncode != 0:
                raise SystemExit(f"[gain] {run_dir.name} failed; see {run_dir.parent / (run_dir.name + '.log')}")


# ------------------------------------------------------------------------------ evaluation
def _eval_one(job: tuple[str, str, str, int, int, int]) -> dict[str, Any]:
    """One (policy, condition) evaluation in a worker process (one torch thread)."""
    policy_dir, task, level, episodes, seed, core = job
    if core is not None:
        os.sched_setaffinity(0, {core})
    import torch

    from vla_rft.evaluation.harness import EvalSettings, evaluate
    from vla_rft.policies import load_policy

    torch.set_num_threads(1)
    policy = load_policy(policy_dir)
    spec = policy.spec
    settings = EvalSettings(episodes=episodes, seed=seed, num_envs=10, perturbation=level,
                            image_size=int(spec.image_size[0]), cameras=list(spec.cameras))
    t0 = time.perf_counter()
    res = evaluate(policy, [task], settings)
    return {"policy": policy_dir, "level": level, "success_rate": res["success_rate"], "successes": res["successes"],
            "episodes": res["episodes"], "ci95": res["ci95"], "seed": seed, "seconds": round(time.perf_counter() - t0, 1)}


def _eval_key(r: dict[str, Any]) -> tuple[str, str, int, int]:
    return (r["policy"], r["level"], r["episodes"], r["seed"])


def evaluate_all(args: argparse.Namespace, policies: dict[str, str]
                 ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[tuple, dict[str, Any]]]:
    """({policy label: {level: result}}, every evaluation known by key). Results are cached in the
    output JSON's ``evaluations``; the returned cache holds the earlier invocations' ones too (a
    later ``--algos grpo`` keeps ppo's)."""
    cache_path = Path(args.out)
    cache: dict[tuple, dict[str, Any]] = {}
    if cache_path.is_file():
        cache = {_eval_key(r): r for r in json.loads(cache_path.read_text()).get("evaluations", [])}
    levels = ["none", *args.levels]
    jobs, out = [], {label: {} for label in policies}
    for label, path in policies.items():
        for level in levels:
            key = (path, level, args.episodes, args.eval_seed)  # == _eval_key of its result
            if key in cache and not args.fresh_eval:
                out[label][level] = cache[key]
            else:
                jobs.append((label, (path, args.task, level, args.episodes, args.eval_seed)))
    cores = list(range(os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=args.parallel) as pool:
        futs = [(label, pool.submit(_eval_one, (*job, cores[i % len(cores)] if args.parallel > 1 else None)))
                for i, (label, job) in enumerate(jobs)]
        for label, fut in futs:
            r = fut.result()
            out[label][r["level"]] = cache[_eval_key(r)] = r
            print(f"[gain] eval {label} {r['level']}: {r['successes']}/{r['episodes']}", file=sys.stderr)
    return out, cache


# ------------------------------------------------------------------------------ report
def _points(x: float) -> float:
    return round(100.0 * x, 1)


def summarize(args: argparse.Namespace, evals: dict[str, dict[str, dict[str, Any]]],
              all_evals: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    from vla_rft.checkpoint import read_meta
    from vla_rft.evaluation.stats import wilson_interval

    start = evals["start"]
    per_algo: dict[str, Any] = {}
    for algo in args.algos:
        runs = []
        for seed in args.seeds:
            label = run_name(algo, args.task, seed, args.tag)
            if label not in evals:
                continue
            summary = json.loads((Path(args.runs_root) / label / "summary.json").read_text())
            ev = evals[label]
            gains = {lv: _points(ev[lv]["success_rate"] - start[lv]["success_rate"]) for lv in ev}
            pert = [gains[lv] for lv in args.levels if lv in gains]
            meta = read_meta(ev["none"]["policy"])
            runs.append({"run": label, "seed": seed, "iterations": summary["iteration"],
                         "checkpoint_counters": meta.get("counters", {}),
                         "env_steps": summary["env_steps"], "wall_minutes": round(summary.get("wall_seconds", 0) / 60, 1),
                         "success": {lv: _points(ev[lv]["success_rate"]) for lv in ev},
                         "ci95": {lv: [_points(c) for c in ev[lv]["ci95"]] for lv in ev},
                         "gain_points": gains, "gain_points_perturbed_mean": round(float(np.mean(pert)), 1) if pert else None})
        if not runs:
            continue
        nominal = [r["gain_points"]["none"] for r in runs]
        pert_means = [r["gain_points_perturbed_mean"] for r in runs if r["gain_points_perturbed_mean"] is not None]
        pooled = {}
        for lv in ["none", *args.levels]:
            s = sum(evals[r["run"]][lv]["successes"] for r in runs)
            n = sum(evals[r["run"]][lv]["episodes"] for r in runs)
            pooled[lv] = {"success": _points(s / n), "ci95": [_points(c) for c in wilson_interval(s, n)], "episodes": n}
        per_algo[algo] = {"runs": runs, "gain_points_mean": round(float(np.mean(nominal)), 1),
                          "gain_points_min": min(nominal), "gain_points_std": round(float(np.std(nominal)), 1),
                          "gain_points_perturbed_mean": round(float(np.mean(pert_means)), 1) if pert_means else None,
                          "pooled_over_seeds": pooled}
    return {
        "task": args.task, "policy": args.policy, "minutes": args.minutes, "seeds": args.seeds,
        "episodes": args.episodes, "eval_seed": args.eval_seed, "levels": args.levels,
        "start": {lv: {"success": _points(r["success_rate"]), "ci95": [_points(c) for c in r["ci95"]]}
                  for lv, r in start.items()},
        "algos": per_algo, "targets": {"ppo_gain_points": 25, "ppo_gain_points_perturbed": 15},
        "machine": {"cpus": os.cpu_count(), "runs_side_by_side": args.parallel, "loadavg_at_end": os.getloadavg()},
        "checkpoint": args.checkpoint,
        "evaluations": all_evals,
    }


def plot(args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = {"ppo": "tab:blue", "grpo": "tab:orange"}
    for algo in args.algos:
        for seed in args.seeds:
            path = Path(args.runs_root) / run_name(algo, args.task, seed, args.tag) / "metrics.jsonl"
            if not path.is_file():
                continue
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            rows = [r for r in rows if "eval/success_rate" in r]
            steps = [r.get("env_steps", 0) for r in rows]
            mins = [r.get("wall_seconds", 0.0) / 60.0 for r in rows]
            succ = [100 * r["eval/success_rate"] for r in rows]
            kw = {"color": colors.get(algo), "alpha": 0.85, "marker": "o", "ms": 3,
                  "label": f"{algo} seed {seed}", "linestyle": ["-", "--", ":"][seed % 3]}
            ax_steps.plot(steps, succ, **kw)
            ax_time.plot(mins, succ, **kw)
    ax_steps.set_xlabel("env steps")
    share = min(1.0, (os.cpu_count() or 1) / max(1, args.parallel))  # one torch thread per run
    ax_time.set_xlabel(f"wall-clock minutes ({share:.2g} cores per run)")
    ax_steps.set_ylabel(f"{args.task} success % (periodic evaluation)")
    for ax in (ax_steps, ax_time):
        ax.grid(alpha=0.3)
    ax_time.legend(fontsize=8)
    fig.suptitle(f"Online fine-tuning on {args.task} from {Path(args.policy).parent.parent.name}")
    fig.tight_layout()
    out = Path(args.png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="starting policy checkpoint (pretrained, task held out)")
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--algos", nargs="+", default=["ppo", "grpo"], choices=["ppo", "grpo"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget per run")
    ap.add_argument("--parallel", type=int, default=2,
                    help="runs (and evaluations) side by side, pinned to the cores round robin when they divide evenly")
    ap.add_argument("--config_ppo", default="ppo_tiny")
    ap.add_argument("--config_grpo", default="grpo_tiny")
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy and condition")
    ap.add_argument("--eval-seed", dest="eval_seed", type=int, default=200000)
    ap.add_argument("--levels", nargs="*", default=LEVELS, help="perturbation levels evaluated besides none")
    ap.add_argument("--runs-root", dest="runs_root", default="runs")
    ap.add_argument("--tag", default="", help="suffix of the run names (separate sweeps)")
    ap.add_argument("--checkpoint", choices=["last", "best"], default="last",
                    help="which checkpoint of each run is evaluated (best: chosen on the periodic-evaluation seeds)")
    ap.add_argument("--out", default=str(RESULTS / "finetune_gain.json"))
    ap.add_argument("--png", default=str(RESULTS / "finetune_curve.png"))
    ap.add_argument("--skip-train", dest="skip_train", action="store_true")
    ap.add_argument("--plot-only", dest="plot_only", action="store_true")
    ap.add_argument("--fresh-eval", dest="fresh_eval", action="store_true", help="ignore cached evaluations")
    ap.add_argument("finetune_args", nargs="*", help="after --: extra vla-rft finetune arguments for new runs")
    args = ap.parse_args(argv)
    if args.plot_only:
        print(plot(args))
        return 0
    if not args.skip_train:
        train_all(args)
    policies = {"start": args.policy}
    for algo in args.algos:
        for seed in args.seeds:
            name = run_name(algo, args.task, seed, args.tag)
            ckpt = Path(args.runs_root) / name / "checkpoints" / args.checkpoint
            if (Path(args.runs_root) / name / "summary.json").is_file():
                policies[name] = str(ckpt)
    evals, cache = evaluate_all(args, policies)
    report = summarize(args, evals, list(cache.values()))
    from vla_rft.checkpoint import atomic_write_text

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1))
    png = plot(args)
    print(json.dumps({k: v for k, v in report.items() if k != "evaluations"}, indent=1))
    print(f"[gain] wrote {out} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
