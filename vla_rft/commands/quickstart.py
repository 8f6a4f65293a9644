"""``vla-rft quickstart``: the first run on a new machine, end to end in minutes on a CPU.

1. collect scripted-expert demonstrations of a few tasks (LeRobotDatasets),
2. pretrain the tiny VLA on them (multi-task behaviour cloning),
3. evaluate it on those tasks and on a held-out target task (seeded, Wilson intervals),
4. write a report (markdown + HTML) and summary.json in the run directory.

Online fine-tuning joins this pipeline when `vla-rft finetune` lands (issue "Online
reinforcement fine-tuning in MuJoCo").
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.errors import UserInputError


@dataclass
class QuickstartConfig:
    """Collect demonstrations, pretrain the tiny VLA, evaluate it, and write a report."""

    tasks: list[str] = field(default_factory=lambda: ["open_drawer", "close_drawer", "lift_cube", "push_cube"])
    """Pretraining tasks (scripted-expert demonstrations are collected for each); the reference set of
    configs/pretrain/tiny_kp_4task.yaml."""
    target: str = "pick_cube"
    """Held-out task, never in pretraining, evaluated to show what fine-tuning starts from."""
    policy: str = "tiny_kp"
    """Policy preset (configs/policy/) or a YAML path."""
    demos: int = 40
    """Expert episodes collected per pretraining task."""
    steps: int = 800
    """Behaviour-cloning optimizer steps."""
    eval_episodes: int = 30
    """Evaluation episodes per task."""
    seed: int = 0
    """Seed for collection, training and evaluation."""
    root: str = "runs"
    """Parent of the run directory."""
    name: str | None = None
    """Run directory name (default quickstart-<UTC timestamp>)."""
    json: bool = False
    """Print one JSON object (the summary) on stdout."""


def _log(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def run(cfg: QuickstartConfig) -> int:
    import sims
    from vla_rft.cli import print_json
    from vla_rft.commands.collect import CollectConfig, collect
    from vla_rft.commands.pretrain import PretrainConfig, train
    from vla_rft.run import LoggingConfig

    for t in [*cfg.tasks, cfg.target]:
        sims.get_task_class(t)
    if cfg.target in cfg.tasks:
        raise UserInputError(f"--target '{cfg.target}' must not be one of the pretraining --tasks")
    name = cfg.name or f"quickstart-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    root = Path(cfg.root) / name
    if root.exists():
        raise FileExistsError(f"run directory '{root}' already exists; pass a new --name")
    t0 = time.time()
    timings: dict[str, float] = {}

    _log(f"1/4 collecting {cfg.demos} expert demonstrations of {len(cfg.tasks)} tasks")
    demos = []
    for i, task in enumerate(cfg.tasks):
        demos.append(collect(CollectConfig(task=task, episodes=cfg.demos, out=str(root / "data" / task),
                                           seed=cfg.seed + 100_000 * (i + 1))))
    timings["collect_s"] = time.time() - t0

    _log(f"2/4 pretraining the tiny VLA for {cfg.steps} steps")
    t1 = time.time()
    pcfg = PretrainConfig(datasets=[d["out"] for d in demos], policy=cfg.policy, steps=cfg.steps, seed=cfg.seed,
                          save_every=0,
                          log_every=max(1, cfg.steps // 20),
                          logging=LoggingConfig(root=str(root), name="pretrain", wandb="offline"))
    pre = train(pcfg)
    timings["pretrain_s"] = time.time() - t1

    _log(f"3/4 evaluating on {len(cfg.tasks)} pretraining tasks + held-out '{cfg.target}', {cfg.eval_episodes} episodes each")
    t2 = time.time()
    ev = _evaluate(pre["checkpoint"], [*cfg.tasks, cfg.target], cfg)
    timings["eval_s"] = time.time() - t2

    _log("4/4 writing the report")
    summary = {
        "run_dir": str(root), "checkpoint": pre["checkpoint"], "pretrain_tasks": cfg.tasks, "target": cfg.target,
        "expert_success": {d["task"]: d["success_rate"] for d in demos},
        "pretrain": {k: pre[k] for k in ("step", "params", "frames", "episodes", "loss_first", "loss_last")},
        "eval": ev, "seconds": {k: round(v, 1) for k, v in {**timings, "total_s": time.time() - t0}.items()},
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    paths = _report(root, summary, cfg)
    _log(f"done in {summary['seconds']['total_s']:.0f} s; report: {paths[0]}")
    if cfg.json:
        print_json(summary)
    else:
        print(paths[0].read_text())
    return 0


def _evaluate(checkpoint: str, tasks: list[str], cfg: QuickstartConfig) -> dict[str, Any]:
    import torch

    from vla_rft.evaluation.harness import EvalSettings, evaluate
    from vla_rft.policies.base import load_policy

    policy = load_policy(checkpoint)
    settings = EvalSettings(episodes=cfg.eval_episodes, seed=cfg.seed + 10_000, num_envs=10,
                            cameras=list(policy.spec.cameras), image_size=int(policy.spec.image_size[0]))
    with torch.inference_mode():
        return evaluate(policy, tasks, settings)


def _report(root: Path, s: dict[str, Any], cfg: QuickstartConfig) -> list[Path]:
    from vla_rft.report import eval_table_rows, write_report

    header = ["task", "success", "95% CI", "episodes", "mean length"]
    rows = eval_table_rows(s["eval"])
    pre_rows = [r for r in rows if r[0] in cfg.tasks]
    tgt_rows = [r for r in rows if r[0] == cfg.target]
    p = s["pretrain"]
    setup = (f"Pretraining tasks: {', '.join(cfg.tasks)} ({cfg.demos} expert demos each; expert success "
             + ", ".join(f"{k} {v:.0%}" for k, v in s["expert_success"].items()) + ").\n"
             f"Tiny VLA ({cfg.policy}), {p['params']:,} trainable parameters, {p['step']} BC steps on {p['frames']} frames "
             f"(loss {p['loss_first']:.3f} -> {p['loss_last']:.3f}).\n"
             f"Evaluation: {cfg.eval_episodes} episodes per task, seeds {cfg.seed + 10_000}.., deterministic actions.\n"
             f"Time: " + ", ".join(f"{k} {v:.0f}" for k, v in s["seconds"].items()))
    return write_report(root / "report", "vla-rft quickstart", [
        ("Setup", setup, None),
        ("Pretraining tasks", pre_rows, header),
        (f"Held-out target ({cfg.target})", tgt_rows, header),
    ])
