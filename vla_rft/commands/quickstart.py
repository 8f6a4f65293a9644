"""``vla-rft quickstart``: the project's point in minutes on a CPU.

A pretrained VLA, fine-tuned with reinforcement learning on a task it was not trained on, and
judged on both the target gain and what it keeps of its pretraining skills:

1. the start policy: the reference pretrained tiny VLA shipped with the package
   (``pretrained:tiny_kp_4task``, see vla_rft/assets/policies/), or with ``--from_scratch``
   collected demonstrations and behaviour cloning (``collect`` + ``pretrain``);
2. evaluate it on the held-out target and on its pretraining tasks (seeded episodes, Wilson
   intervals, rollout videos);
3. fine-tune it on the target with PPO (``vla-rft finetune``, the ``ppo_tiny`` preset) for a
   wall-clock budget;
4. evaluate the fine-tuned policy on the same episodes (same seeds);
5. write the run's HTML report (``vla-rft report``) and summary.json, print a summary table.

Every stage writes into one run directory and is skipped when re-run once done; an interrupted
fine-tuning stage resumes from its last checkpoint. Re-running the same command therefore
resumes instead of starting over.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.algorithms.forgetting import ForgettingConfig
from vla_rft.config import require_at_least
from vla_rft.errors import UserInputError

PRETRAIN_TASKS = ["open_drawer", "close_drawer", "lift_cube", "push_cube"]


@dataclass
class QuickstartConfig:
    """Fine-tune a pretrained VLA with RL on a held-out task; evaluate target and retention; write a report."""

    policy: str = "pretrained:tiny_kp_4task"
    """Start policy: a shipped policy (pretrained:NAME) or a checkpoint directory. Ignored with --from_scratch."""
    target: str = "press_button"
    """Held-out task to fine-tune on, not a pretraining task (the shipped start policy presses the named button of press_button in about 4 of 100 episodes)."""
    retain_tasks: list[str] = field(default_factory=lambda: list(PRETRAIN_TASKS))
    """Pretraining tasks evaluated before and after (retention of pretraining skills)."""
    finetune: str = "ppo_tiny"
    """Fine-tuning preset (configs/finetune/)."""
    minutes: float = 7.0
    """Wall-clock budget of the RL fine-tuning stage."""
    regularizers: ForgettingConfig = field(default_factory=ForgettingConfig)
    """Forgetting-mitigation loss terms of the fine-tuning stage (e.g. --regularizers.kl_ref_coef 0.01)."""
    vector: str = "sync"
    """Fine-tuning envs in this process (sync) or a subprocess each (async, measured here to give the same env steps with twice the memory)."""
    eval_episodes: int = 100
    """Target episodes in the before / after evaluations (the same seeds both times)."""
    retain_episodes: int = 25
    """Episodes per pretraining task in the before / after evaluations."""
    videos: int = 2
    """Episodes per task recorded as video, before and after."""
    eval_seed: int = 200000
    """Before / after episode i uses seed eval_seed + i (disjoint from training and periodic evaluation)."""
    num_envs: int = 10
    """Episodes run side by side in evaluation."""
    curve_every: int = 15
    """Fine-tuning iterations between the periodic target evaluations that draw the learning curve."""
    curve_episodes: int = 30
    """Target episodes per periodic evaluation during fine-tuning (0 draws no curve, only before and after)."""
    save_every: int = 5
    """Fine-tuning checkpoint interval in iterations (what an interrupted quickstart resumes from)."""
    from_scratch: bool = False
    """Collect demonstrations and pretrain the start policy here instead of loading --policy (adds ~10 minutes)."""
    demos: int = 40
    """Expert episodes collected per pretraining task (with --from_scratch)."""
    steps: int = 800
    """Behaviour-cloning optimizer steps (with --from_scratch)."""
    seed: int = 0
    """Seed of fine-tuning (and of collection and pretraining with --from_scratch)."""
    root: str = "runs"
    """Parent of the run directory."""
    name: str = "quickstart"
    """Run directory name; re-running with the same name resumes (finished stages are skipped)."""
    json: bool = False
    """Print one JSON object (the summary) on stdout."""


class _Stages:
    """Stage messages on stderr, one line each, and a progress bar where there is a terminal."""

    def __init__(self, total: int) -> None:
        self.total, self.i, self.t0 = total, 0, time.time()

    def start(self, msg: str) -> None:
        self.i += 1
        print(f"[quickstart {self.i}/{self.total}] {msg}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True, leave=False)


def _settings(cfg: QuickstartConfig) -> dict[str, Any]:
    from vla_rft.config import to_dict

    return {k: v for k, v in to_dict(cfg).items() if k != "json"}


def _check(cfg: QuickstartConfig, root: Path) -> None:
    import sims

    for t in [*cfg.retain_tasks, cfg.target]:
        sims.get_task_class(t)  # unknown names raise with the valid list
    if cfg.target in cfg.retain_tasks:
        raise UserInputError(f"--target '{cfg.target}' must be held out: it is one of --retain_tasks")
    require_at_least(cfg, ("eval_episodes", "num_envs", "curve_every", "save_every"), error=UserInputError)
    if min(cfg.retain_episodes, cfg.videos, cfg.curve_episodes) < 0:
        raise UserInputError("--retain_episodes, --videos and --curve_episodes must be >= 0")
    if not cfg.minutes > 0:
        raise UserInputError(f"--minutes must be > 0, got {cfg.minutes}")
    stored = root / "config.yaml"
    if stored.is_file():  # re-run: resume only the same experiment
        import yaml

        old, new = yaml.safe_load(stored.read_text()) or {}, _settings(cfg)
        diff = sorted(k for k in new if old.get(k) != new[k])
        if diff:
            raise UserInputError(f"run directory '{root}' holds a quickstart with other settings ({', '.join(diff)}); "
                                 "pass a new --name to start another, or the same settings to resume it")


def run(cfg: QuickstartConfig) -> int:
    from vla_rft.cli import print_json

    root = Path(cfg.root) / cfg.name
    _check(cfg, root)
    root.mkdir(parents=True, exist_ok=True)
    from vla_rft.checkpoint import atomic_write_text
    from vla_rft.config import to_yaml

    atomic_write_text(root / "config.yaml", to_yaml(cfg))
    atomic_write_text(root / "run.json", json.dumps({"command": "quickstart"}) + "\n")
    t0 = time.time()
    stages = _Stages(6 if cfg.from_scratch else 5)
    timings: dict[str, float] = json.loads((root / "timings.json").read_text()) if (root / "timings.json").is_file() else {}

    def timed(key: str, fn, *args):
        t = time.time()
        out = fn(*args)
        if out[1]:  # the stage ran now (not skipped): record its time
            timings[key] = round(time.time() - t, 1)
            (root / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        return out[0]

    if cfg.from_scratch:
        policy = timed("pretrain_s", _pretrain, cfg, root, stages)
    else:
        policy = cfg.policy
        stages.start(f"start policy {policy}")
    tasks = [cfg.target, *[t for t in cfg.retain_tasks if cfg.retain_episodes > 0]]
    before = timed("eval_before_s", _evaluate, cfg, root / "before", policy, tasks, stages, "evaluating the start policy")
    ft = timed("finetune_s", _finetune, cfg, root, policy, stages)
    after = timed("eval_after_s", _evaluate, cfg, root / "after", ft["checkpoint"], tasks, stages,
                  "evaluating the fine-tuned policy on the same episodes")
    stages.start("writing the report")
    summary = _summary(cfg, root, policy, before, after, ft, timings, time.time() - t0)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from vla_rft.report import build_report

    report = build_report([root], root / "report.html", title=f"vla-rft quickstart: {cfg.target}")
    summary["report"] = str(report)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[quickstart] done in {time.time() - t0:.0f} s; report: {report}", file=sys.stderr, flush=True)
    if cfg.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 0


# ------------------------------------------------------------------------------ stages
def _pretrain(cfg: QuickstartConfig, root: Path, stages: _Stages) -> tuple[str, bool]:
    """--from_scratch: collect expert demos of the retention tasks, behaviour-clone the tiny VLA."""
    from vla_rft.commands.collect import CollectConfig, collect
    from vla_rft.commands.pretrain import PretrainConfig, train
    from vla_rft.run import LoggingConfig

    ckpt = root / "pretrain" / "checkpoints" / "last"
    if (root / "pretrain" / "summary.json").is_file():
        stages.start("pretraining: done earlier")
        return str(ckpt), False
    stages.start(f"collecting {cfg.demos} expert demonstrations of {', '.join(cfg.retain_tasks)}")
    datasets = []
    for i, task in enumerate(cfg.retain_tasks):
        out = root / "data" / task
        if not (out / "meta" / "info.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            collect(CollectConfig(task=task, episodes=cfg.demos, out=str(out), seed=cfg.seed + 100_000 * (i + 1)))
        datasets.append(str(out))
    stages.start(f"pretraining the tiny VLA for {cfg.steps} steps")
    resume = str(root / "pretrain") if ckpt.is_dir() else None
    pcfg = PretrainConfig(datasets=datasets, policy="tiny_kp", steps=cfg.steps, seed=cfg.seed, save_every=100,
                          log_every=max(1, cfg.steps // 20), resume=resume,
                          logging=LoggingConfig(root=str(root), name="pretrain", wandb="disabled"))
    if resume is None:
        shutil.rmtree(root / "pretrain", ignore_errors=True)
    else:
        from vla_rft.trainer import resumed_config

        pcfg = resumed_config(PretrainConfig, pcfg, "pretrain")
    return train(pcfg)["checkpoint"], True


def _evaluate(cfg: QuickstartConfig, out: Path, policy: str, tasks: list[str], stages: _Stages,
              msg: str) -> tuple[dict[str, Any], bool]:
    from vla_rft.commands.evaluate import EvalConfig, evaluate_policy
    from vla_rft.run import LoggingConfig

    if (out / "summary.json").is_file():
        stages.start(f"{msg}: done earlier")
        return json.loads((out / "summary.json").read_text()), False
    shutil.rmtree(out, ignore_errors=True)  # an interrupted evaluation starts over (it is short)
    episodes = {t: (cfg.eval_episodes if t == cfg.target else cfg.retain_episodes) for t in tasks}
    stages.start(f"{msg}: {cfg.eval_episodes} episodes of {cfg.target}"
                 + (f", {cfg.retain_episodes} of each pretraining task" if len(tasks) > 1 else ""))
    ecfg = EvalConfig(policy=policy, tasks=tasks, episodes=cfg.eval_episodes, seed=cfg.eval_seed, num_envs=cfg.num_envs,
                      video=cfg.videos > 0, video_episodes=cfg.videos,
                      logging=LoggingConfig(root=str(out.parent), name=out.name, wandb="disabled"))
    with stages.bar(sum(episodes.values()), "episodes") as bar:
        res = evaluate_policy(ecfg, episodes=episodes, progress=bar.update)
    return res, True


def _finetune(cfg: QuickstartConfig, root: Path, policy: str, stages: _Stages) -> tuple[dict[str, Any], bool]:
    from vla_rft.commands.finetune import FinetuneConfig, train
    from vla_rft.config import parse_config
    from vla_rft.trainer import resumed_config

    run_dir = root / "finetune"
    if (run_dir / "summary.json").is_file():
        stages.start("fine-tuning: done earlier")
        return json.loads((run_dir / "summary.json").read_text()), False
    args = ["--config", cfg.finetune, "--policy", policy, "--task", cfg.target, "--minutes", str(cfg.minutes),
            "--seed", str(cfg.seed), "--vector", cfg.vector, "--eval_every", str(cfg.curve_every),
            "--eval_episodes", str(cfg.curve_episodes), "--save_every", str(cfg.save_every), "--logging.root", str(root), "--logging.name", "finetune", "--logging.wandb", "disabled"]
    fcfg = parse_config(FinetuneConfig, args, group="finetune")
    fcfg.regularizers = cfg.regularizers
    fcfg.retain_tasks = []  # retention is the before / after stages' evaluation, not the curve's
    if (run_dir / "checkpoints" / "last").is_dir():
        stages.start(f"fine-tuning ({fcfg.algo}) on {cfg.target}: resuming the interrupted run")
        fcfg.resume = str(run_dir)
        fcfg = resumed_config(FinetuneConfig, fcfg, "finetune")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        stages.start(f"fine-tuning ({fcfg.algo}, {cfg.finetune}) on {cfg.target} for {cfg.minutes:g} minutes")
    return train(fcfg), True


# ------------------------------------------------------------------------------ summary
def _summary(cfg: QuickstartConfig, root: Path, policy: str, before: dict[str, Any], after: dict[str, Any],
             ft: dict[str, Any], timings: dict[str, float], total_s: float) -> dict[str, Any]:
    t = cfg.target
    b, a = before["per_task"][t], after["per_task"][t]
    retain = [x for x in cfg.retain_tasks if x in before["per_task"]]

    def mean(res: dict[str, Any]) -> float | None:
        return sum(res["per_task"][x]["success_rate"] for x in retain) / len(retain) if retain else None

    rb, ra = mean(before), mean(after)
    note = (f"Budget: {cfg.minutes:g} minutes of {ft['algo'].upper()} ({ft['iteration']} iterations, {ft['env_steps']:,} "
            f"environment steps) from {policy}. Before and after: the same {cfg.eval_episodes} seeded episodes of "
            f"{t}" + (f" and {cfg.retain_episodes} of each pretraining task" if retain else "")
            + ", deterministic chunks; intervals are Wilson 95%. A short budget on 2 CPU cores: the "
            "fine-tuning benchmark (docs/results.md) runs 60 minutes and 3 seeds.")
    return {
        "kind": "quickstart", "run_dir": str(root), "target": t, "retain_tasks": retain, "start_policy": policy,
        "finetuned_checkpoint": ft["checkpoint"], "algo": ft["algo"], "env_steps": ft["env_steps"],
        "iterations": ft["iteration"], "finetune_minutes": cfg.minutes,
        "target_before": b, "target_after": a, "gain_points": round(100 * (a["success_rate"] - b["success_rate"]), 1),
        "retention_before": rb, "retention_after": ra,
        "retention_ratio": (ra / rb if rb else None) if ra is not None else None,
        "before": before, "after": after, "note": note,
        "seconds": {**timings, "stages_total_s": round(sum(timings.values()), 1), "this_call_s": round(total_s, 1)},
    }


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ci(r: dict[str, Any]) -> str:
        lo, hi = r["ci95"]
        return f"{r['success_rate']:.0%} [{lo:.0%}, {hi:.0%}] ({r['successes']}/{r['episodes']})"

    table = Table(title=f"quickstart: {s['algo'].upper()} on {s['target']} for {s['finetune_minutes']:g} min "
                        f"({s['env_steps']:,} env steps)")
    for col in ("task", "before", "after", "change"):
        table.add_column(col)
    for task in [s["target"], *s["retain_tasks"]]:
        b, a = s["before"]["per_task"][task], s["after"]["per_task"][task]
        label = f"{task} (target)" if task == s["target"] else task
        table.add_row(label, ci(b), ci(a), f"{100 * (a['success_rate'] - b['success_rate']):+.0f} pts")
    console = Console()
    console.print(table)
    if s["retention_ratio"] is not None:
        console.print(f"retention: pretraining-task success after / before = {s['retention_ratio']:.0%}")
    console.print(f"report: {s['report']}")
