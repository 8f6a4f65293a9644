"""Retention benchmark: how much pretraining skill each forgetting-mitigation module keeps, at what
target gain (issue "Forgetting mitigation", ALGORITHMS.md section 5).

From the shipped reference policy (``pretrained:tiny_kp_4task``, pretrained on open_drawer,
close_drawer, lift_cube, push_cube), fine-tune on the held-out press_button under one wall-clock
budget per run, with:

- ``none``: PPO (``ppo_tiny``) with no module;
- each module alone: ``kl`` (forward KL to pi_0 on target states), ``l2`` (L2-to-init), ``ewc``,
  ``replay`` (BC replay of pretraining data), ``lora`` (peft LoRA, rank 8), ``ema`` (EMA of the
  weights), and ``wise`` (WiSE-FT alpha 0.5 of the ``none`` runs, no extra training);
- ``pair``: the two best single modules together (chosen from this run's figures: the highest
  retention among modules that keep >= 90% of none's gain, else the best retention x gain);
- ``sft``: supervised fine-tuning on expert press_button demonstrations, the baseline.

Each run is evaluated once at its end on the same seeds: press_button (``--target_episodes``) and
every pretraining task (``--retain_episodes`` each), plus the forward KL(pi_0 || pi) on fixed
target-task states. Results (per run and per config, pooled over seeds, Wilson intervals) go to
``benchmarks/results/retention.json``, a markdown table to ``benchmarks/results/retention.md`` and
the retention-versus-gain plot to ``docs/images/retention.png``. The answers to the issue's
questions (does PPO forget, SFT vs RL, does the KL predict forgetting, LoRA) are computed from the
same runs and printed.

Reduced preset (default, about 80 minutes on the 2-core machine with ``--jobs 2``)::

    python benchmarks/retention.py

Full preset (7-minute runs, the quickstart's budget; about 3 hours here)::

    python benchmarks/retention.py --minutes 7 --target_episodes 100 --out runs/retention-full

Runs are resumable: a finished run (its summary.json) is not run again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET = "press_button"
PRETRAIN_TASKS = ["open_drawer", "close_drawer", "lift_cube", "push_cube"]
START = "pretrained:tiny_kp_4task"
EVAL_SEED = 100_000

# module -> finetune arguments (coefficients fixed before the run, not tuned on its results)
MODULES: dict[str, list[str]] = {
    "kl": ["--regularizers.kl_ref_coef", "0.01"],
    "l2": ["--regularizers.l2_init_coef", "1.0"],
    "ewc": ["--regularizers.ewc_coef", "1.0"],
    "replay": ["--regularizers.replay_coef", "1.0", "--regularizers.replay_ratio", "0.5"],
    "lora": ["--regularizers.lora_rank", "8", "--regularizers.lora_alpha", "16", "--optim.lr_policy", "3e-4"],
    "ema": ["--regularizers.ema_decay", "0.9"],
}
NEEDS_DATA = {"ewc", "replay"}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def vla(args: list[str], log: Path) -> dict:
    """Run ``vla-rft ARGS --json``; its JSON summary (stderr to ``log``)."""
    cmd = [sys.executable, "-m", "vla_rft.cli", *args, "--json"]
    env = {**os.environ, "WANDB_MODE": "disabled", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with open(log, "w") as err:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed (exit {out.returncode}); see {log}")
    return json.loads(out.stdout)


# ------------------------------------------------------------------------------ data
def collect_data(out: Path, demos: int, replay_demos: int, pretrain_data: list[str] | None
                 ) -> tuple[list[str], list[str]]:
    """Expert press_button demos (SFT) and expert demos of the pretraining tasks (replay, EWC;
    unless ``pretrain_data`` is given, e.g. the reference policy's own DART data)."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    jobs = [(TARGET, demos, 900_000)]
    if not pretrain_data:
        jobs += [(t, replay_demos, 910_000 + 10_000 * i) for i, t in enumerate(PRETRAIN_TASKS)]
    roots = []
    for task, n, seed in jobs:
        root = data / task
        if not (root / "meta" / "info.json").is_file():
            print(f"collecting {n} expert episodes of {task}", file=sys.stderr, flush=True)
            vla(["collect", "--task", task, "--episodes", str(n), "--out", str(root), "--seed", str(seed)],
                data / f"{task}.log")
        roots.append(str(root))
    return roots[:1], list(pretrain_data) if pretrain_data else roots[1:]


# ------------------------------------------------------------------------------ runs
def finetune(out: Path, name: str, seed: int, extra: list[str], args: argparse.Namespace, sft_data: list[str]) -> dict:
    run_dir = out / "runs" / name
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    algo = ["--algo", "sft", "--data", json.dumps(sft_data), "--iterations", "100000"] if name.startswith("sft") \
        else ["--config", "ppo_tiny", "--iterations", "100000"]
    cmd = ["finetune", *algo, "--policy", START, "--task", TARGET, "--minutes", str(args.minutes), "--seed", str(seed),
           "--eval_every", "0", "--eval_episodes", str(args.target_episodes), "--retain_episodes",
           str(args.retain_episodes), "--retain_tasks", json.dumps(PRETRAIN_TASKS), "--eval_seed", str(EVAL_SEED),
           "--save_every", "20", "--logging.root", str(out / "runs"), "--logging.name", name,
           "--logging.wandb", "disabled", *extra]
    if run_dir.exists():  # an interrupted run: resume it
        cmd = ["finetune", "--resume", str(run_dir)]
    t0 = time.time()
    summary = vla(cmd, out / "runs" / f"{name}.log")
    print(f"{name}: target {summary['eval/success_rate']:.2f}, pretraining tasks "
          f"{summary['eval_retention/mean_success']:.2f}, KL {summary['eval/kl_forward_target']:.3f} "
          f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return summary


def wise(out: Path, seed: int, alphas: list[float], args: argparse.Namespace) -> dict:
    """WiSE-FT of the seed's ``none`` run (alpha 0 is the start itself): same seeds and episodes."""
    name = f"wise-s{seed}"
    path = out / "runs" / name / "summary.json"
    if path.is_file():
        return json.loads(path.read_text())
    finetuned = out / "runs" / f"none-s{seed}" / "checkpoints" / "last"
    return vla(["wise-ft", "--start", START, "--finetuned", str(finetuned), "--alphas", json.dumps(alphas),
                "--target", TARGET, "--retain_tasks", json.dumps(PRETRAIN_TASKS), "--episodes",
                str(args.target_episodes), "--retain_episodes", str(args.retain_episodes), "--seed", str(EVAL_SEED),
                "--logging.root", str(out / "runs"), "--logging.name", name], out / "runs" / f"{name}.log")


def run_record(config: str, seed: int, s: dict, args: argparse.Namespace) -> dict:
    """One run's counts from a finetune summary."""
    n_t, n_r = args.target_episodes, args.retain_episodes
    return {"config": config, "seed": seed, "target": round(s["eval/success_rate"] * n_t), "target_n": n_t,
            "retain": {t: round(s[f"eval_retention/{t}/success_rate"] * n_r) for t in PRETRAIN_TASKS},
            "retain_n": n_r, "kl": s.get("eval/kl_forward_target"), "env_steps": s.get("env_steps"),
            "iterations": s.get("iteration"), "train_seconds": s.get("train_seconds")}


def wise_record(seed: int, row: dict, config: str = "wise") -> dict:
    pt = row["per_task"]
    return {"config": config, "seed": seed, "target": pt[TARGET]["successes"], "target_n": pt[TARGET]["episodes"],
            "retain": {t: pt[t]["successes"] for t in PRETRAIN_TASKS}, "retain_n": pt[PRETRAIN_TASKS[0]]["episodes"],
            "kl": None, "env_steps": None, "iterations": None, "train_seconds": None}


# ------------------------------------------------------------------------------ analysis
def pooled(records: list[dict], start: dict) -> dict:
    """A config's figures pooled over its seeds, against the start."""
    k_t, n_t = sum(r["target"] for r in records), sum(r["target_n"] for r in records)
    per_task = {}
    for t in PRETRAIN_TASKS:
        k, n = sum(r["retain"][t] for r in records), sum(r["retain_n"] for r in records)
        per_task[t] = {"success": k / n, "ci95": wilson(k, n)}
    retain_mean = float(np.mean([v["success"] for v in per_task.values()]))
    kls = [r["kl"] for r in records if r["kl"] is not None]
    seeds_target = [r["target"] / r["target_n"] for r in records]
    seeds_ret = [np.mean([r["retain"][t] / r["retain_n"] for t in PRETRAIN_TASKS]) for r in records]
    return {"seeds": [r["seed"] for r in records], "target": k_t / n_t, "target_ci95": wilson(k_t, n_t),
            "target_episodes": n_t, "gain": k_t / n_t - start["target"], "per_task": per_task,
            "retain_mean": retain_mean, "retention": retain_mean / start["retain_mean"],
            "target_per_seed": seeds_target, "retention_per_seed": [float(x) / start["retain_mean"] for x in seeds_ret],
            "kl": float(np.mean(kls)) if kls else None,
            "env_steps": float(np.mean([r["env_steps"] for r in records])) if records[0]["env_steps"] is not None
            else None}


def correlation(x: list[float], y: list[float]) -> dict:
    from scipy import stats

    if len(x) < 3:
        return {"n": len(x)}
    p, s = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return {"n": len(x), "pearson": float(p.statistic), "pearson_p": float(p.pvalue), "spearman": float(s.statistic),
            "spearman_p": float(s.pvalue)}


def choose_pair(configs: dict, modules: list[str]) -> list[str]:
    none_gain = configs["none"]["gain"]
    keep = [m for m in modules if none_gain <= 0 or configs[m]["gain"] >= 0.9 * none_gain]
    if len(keep) >= 2:
        ranked = sorted(keep, key=lambda m: -configs[m]["retention"])
    else:
        ranked = sorted(modules, key=lambda m: -(configs[m]["retention"] * max(configs[m]["gain"], 0.0)))
    return ranked[:2]


def plot(configs: dict, start: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, c in configs.items():
        lo, hi = c["target_ci95"]
        ax.errorbar(100 * c["gain"], 100 * c["retention"], xerr=[[100 * (c["target"] - lo)], [100 * (hi - c["target"])]],
                    fmt="o", capsize=3, label=name, color="black" if name == "none" else None)
        ax.annotate(name, (100 * c["gain"], 100 * c["retention"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(100, color="grey", lw=0.8, ls=":")
    ax.axhline(95, color="tab:green", lw=0.8, ls="--", label="95% retention goal")
    if "none" in configs:
        ax.axvline(90 * configs["none"]["gain"], color="tab:orange", lw=0.8, ls="--", label="90% of none's gain")
    ax.set_xlabel(f"target gain on {TARGET} (points; start {100 * start['target']:.0f}%)")
    ax.set_ylabel("pretraining-task success kept (% of start)")
    ax.set_title("Retention vs gain, pooled over seeds (Wilson 95% on the target)")
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table(configs: dict, start: dict, args: argparse.Namespace) -> str:
    lines = [f"| config | target {TARGET} (95% CI) | gain | " + " | ".join(PRETRAIN_TASKS)
             + " | pretraining mean | retention | KL(pi0‖pi) target states | env steps per run |",
             "|---|---|---|" + "---|" * len(PRETRAIN_TASKS) + "---|---|---|---|"]
    st = f"| start | {100 * start['target']:.0f}% | – | " + " | ".join(
        f"{100 * start['per_task'][t]:.0f}%" for t in PRETRAIN_TASKS) + f" | {100 * start['retain_mean']:.0f}% | 100% | 0 | – |"
    lines.append(st)
    for name, c in configs.items():
        lo, hi = c["target_ci95"]
        kl = f"{c['kl']:.3f}" if c["kl"] is not None else "–"
        lines.append(f"| {name} | {100 * c['target']:.1f}% ({100 * lo:.0f}–{100 * hi:.0f}) | {100 * c['gain']:+.1f} | "
                     + " | ".join(f"{100 * c['per_task'][t]['success']:.0f}%" for t in PRETRAIN_TASKS)
                     + f" | {100 * c['retain_mean']:.1f}% | {100 * c['retention']:.0f}% | {kl} | "
                     + (f"{c['env_steps']:,.0f} |" if c.get("env_steps") else "– |"))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.5, help="wall-clock training budget of every run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--target_episodes", type=int, default=50)
    ap.add_argument("--retain_episodes", type=int, default=25)
    ap.add_argument("--demos", type=int, default=50, help="expert press_button demonstrations for SFT")
    ap.add_argument("--replay_demos", type=int, default=30, help="expert demos per pretraining task (replay, EWC)")
    ap.add_argument("--pretrain_data", nargs="*", default=None, help="use these pretraining datasets instead")
    ap.add_argument("--modules", nargs="+", default=list(MODULES), help="modules to run (names of MODULES or --module)")
    ap.add_argument("--module", action="append", default=[], metavar="NAME=ARGS",
                    help="define a module, e.g. 'l2-100=--regularizers.l2_init_coef 100' (repeatable)")
    ap.add_argument("--no_pair", action="store_true", help="skip the best-pair runs (a coefficient sweep)")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (they share the machine's cores)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "retention"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "retention.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "images" / "retention.png"))
    args = ap.parse_args()
    for spec in args.module:
        name, _, rest = spec.partition("=")
        name = name.strip()
        MODULES[name] = rest.split()
        if any(a.startswith(("--regularizers.ewc", "--regularizers.replay")) for a in MODULES[name]):
            NEEDS_DATA.add(name)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {unknown}; define them with --module NAME=ARGS")
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    sft_data, replay_data = collect_data(out, args.demos, args.replay_demos, args.pretrain_data)
    data_args = ["--regularizers.pretrain_data", json.dumps(replay_data), "--regularizers.ewc_samples", "256"]
    specs = [("none", [])] + [(m, MODULES[m] + (data_args if m in NEEDS_DATA else [])) for m in args.modules] + [("sft", [])]
    jobs = [(f"{name}-s{seed}", name, seed, extra) for seed in args.seeds for name, extra in specs]
    records: list[dict] = []

    def one(job):
        run_name, config, seed, extra = job
        return run_record(config, seed, finetune(out, run_name, seed, extra, args, sft_data), args)

    with ThreadPoolExecutor(args.jobs) as pool:
        records += list(pool.map(one, jobs))
        wise_rows = list(pool.map(lambda s: wise(out, s, [0.0, 0.5], args), args.seeds))
    start_rows = [wise_record(s, w["rows"][0], "start") for s, w in zip(args.seeds, wise_rows)]
    records += [wise_record(s, w["rows"][1]) for s, w in zip(args.seeds, wise_rows)]
    # the start is deterministic: alpha 0 evaluated once per seed gives the same counts each time
    st = start_rows[0]
    start = {"target": st["target"] / st["target_n"], "per_task": {t: st["retain"][t] / st["retain_n"] for t in PRETRAIN_TASKS}}
    start["retain_mean"] = float(np.mean(list(start["per_task"].values())))
    by = lambda name: [r for r in records if r["config"] == name]
    configs = {name: pooled(by(name), start) for name in ["none", *args.modules, "wise", "sft"]}
    pair: list[str] = []
    if not args.no_pair:
        pair = choose_pair(configs, list(args.modules))
        pair_extra = [a for m in pair for a in MODULES[m] + (data_args if m in NEEDS_DATA else [])]
        if pair_extra.count("--optim.lr_policy") > 1:
            raise SystemExit("two modules set the learning rate")
        pair_name = "+".join(pair)
        with ThreadPoolExecutor(args.jobs) as pool:
            records += list(pool.map(one, [(f"pair-{pair_name}-s{s}", pair_name, s, pair_extra) for s in args.seeds]))
        configs[pair_name] = pooled(by(pair_name), start)

    rl = [r for r in records if r["config"] not in ("wise", "start") and r["kl"] is not None]
    drops = [start["retain_mean"] - np.mean([r["retain"][t] / r["retain_n"] for t in PRETRAIN_TASKS]) for r in rl]
    kl_vs_drop = correlation([r["kl"] for r in rl], [float(d) for d in drops])
    none = configs["none"]
    goal = [n for n, c in configs.items() if n not in ("none", "sft") and c["retention"] >= 0.95
            and (none["gain"] <= 0 or c["gain"] >= 0.9 * none["gain"])]
    result = {
        "preset": {"minutes": args.minutes, "seeds": args.seeds, "target_episodes": args.target_episodes,
                   "retain_episodes": args.retain_episodes, "jobs": args.jobs, "eval_seed": EVAL_SEED,
                   "modules": {m: MODULES[m] for m in args.modules}, "replay_data": replay_data, "sft_data": sft_data},
        "start": start, "configs": configs, "pair": pair, "runs": records, "kl_vs_retention_drop": kl_vs_drop,
        "goal_met_by": goal, "total_seconds": round(time.time() - t_start, 1),
        "command": "python benchmarks/retention.py " + " ".join(sys.argv[1:]),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1))
    md = table(configs, start, args)
    Path(args.results).with_suffix(".md").write_text(md + "\n")
    plot(configs, start, Path(args.plot))
    print(md)
    print(f"\npair: {'+'.join(pair) or 'not run'}; KL vs retention drop over {kl_vs_drop.get('n')} runs: {kl_vs_drop}; "
          f"goal (>=95% retention at >=90% of none's gain) met by: {goal or 'none'}; "
          f"{result['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
