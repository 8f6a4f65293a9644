"""``vla-rft eval``: success rates of a policy on tasks, with Wilson 95% intervals.

The policy is a checkpoint directory (``vla-rft pretrain`` / fine-tuning output) or
``scripted:expert`` (each task's scripted expert: a check of the harness itself). Episodes are
seeded (episode i of a task uses seed + i), run on a gymnasium vector env, and the policy's
chunks are executed open-loop (``--replan`` shortens that). Results go to stdout (a table, or one
JSON object with ``--json``) and to ``runs/<name>/summary.json``; ``--video`` writes mp4s there.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

from vla_rft.errors import UserInputError
from vla_rft.run import LoggingConfig


@dataclass
class EvalConfig:
    """Evaluate a policy on one or more tasks (seeded, vectorized, with confidence intervals)."""

    policy: str | None = None
    """Required. A policy checkpoint directory, or --policy=scripted:expert to run each task's scripted expert."""
    tasks: list[str] = field(default_factory=list)
    """Tasks to evaluate on (see vla-rft tasks). Required."""
    episodes: int = 100
    """Episodes per task."""
    perturb: str = "none"
    """Perturbation level(s) - none, visual, semantic, execution, dynamics (comma-separated)."""
    seed: int = 0
    """Episode i of each task is reset with seed + i."""
    num_envs: int = 8
    """Episodes run side by side (one policy batch)."""
    vector: str = "sync"
    """Vector env kind, sync (one process) or async (a subprocess per env)."""
    replan: int | None = None
    """Execute this many actions of each chunk before re-querying the policy (default the whole chunk)."""
    deterministic: bool = True
    """Act with the policy's mean chunk (true) or sample (false, seeded)."""
    video: bool = False
    """Record mp4 videos (front camera) of the first video_episodes episodes of each task."""
    video_episodes: int = 3
    """Episodes per task recorded when video is on."""
    threads: int = 1
    """torch CPU threads for policy inference."""
    json: bool = False
    """Print one JSON object with success_rate, episodes, ci95 and per_task on stdout."""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(wandb="disabled"))
    """Run directory (summary.json, videos) and wandb settings."""


class ScriptedExpertPolicy:
    """Each task's scripted expert behind the harness's policy interface (chunks of 1).

    The experts read the simulator's privileged state, so they need a sync vector env; they are
    bound to its envs (whatever task they hold) by :meth:`reset_hook` after every batch reset.
    """

    def __init__(self) -> None:
        self.experts: list[Any] = []

    def reset_hook(self, env, indices) -> None:
        import sims

        self.experts = [sims.make_expert(e.unwrapped.task.name, e) for e in env.envs]

    def act(self, obs, deterministic: bool = True):
        import numpy as np

        return np.stack([e(None) for e in self.experts])[:, None, :].astype(np.float32)


def _check(cfg: EvalConfig) -> None:
    import sims

    if not cfg.policy:
        raise UserInputError("--policy is required (a checkpoint directory or scripted:expert)")
    if not cfg.tasks:
        raise UserInputError(f"--tasks is required, e.g. --tasks '[pick_cube]'; tasks: {', '.join(s.name for s in sims.list_tasks())}")
    for t in cfg.tasks:
        sims.get_task_class(t)  # unknown names raise with the valid list
    if cfg.episodes < 1 or cfg.num_envs < 1:
        raise UserInputError("--episodes and --num_envs must be >= 1")
    if cfg.policy == "scripted:expert" and cfg.vector != "sync":
        raise UserInputError("scripted:expert reads the simulator's state: use --vector sync")


def run(cfg: EvalConfig) -> int:
    """CLI entry: evaluate, print a table (or one JSON object)."""
    from vla_rft.cli import print_json

    res = evaluate_policy(cfg)
    if cfg.json:
        print_json(res)
    else:
        _print_table(res)
    return 0


def evaluate_policy(cfg: EvalConfig, *, episodes: dict[str, int] | None = None, progress=None) -> dict[str, Any]:
    """Evaluate into a run directory (summary.json, videos); returns the summary.

    ``episodes`` sets episodes per task where they differ from ``cfg.episodes``."""
    from vla_rft.evaluation.harness import EvalSettings, evaluate
    from vla_rft.run import open_run

    _check(cfg)
    import torch

    torch.set_num_threads(cfg.threads)
    run_dir = open_run("eval", cfg, cfg.logging)
    settings = EvalSettings(episodes=cfg.episodes, seed=cfg.seed, num_envs=cfg.num_envs, vector=cfg.vector,
                            perturbation=cfg.perturb, replan=cfg.replan, deterministic=cfg.deterministic,
                            videos=cfg.video_episodes if cfg.video else 0)
    video_dir = run_dir.videos if cfg.video else None
    if cfg.policy == "scripted:expert":
        expert = ScriptedExpertPolicy()
        res = evaluate(expert, list(cfg.tasks), settings, video_dir=video_dir, reset_hook=expert.reset_hook,
                       episodes=episodes, progress=progress)
    else:
        from vla_rft.policies.base import load_policy

        policy = load_policy(cfg.policy)
        spec = policy.spec
        settings = dataclasses.replace(settings, cameras=list(spec.cameras), image_size=int(spec.image_size[0]))
        with torch.inference_mode():
            res = evaluate(policy, list(cfg.tasks), settings, video_dir=video_dir, episodes=episodes, progress=progress)
    res["policy"] = cfg.policy
    res["run_dir"] = str(run_dir.path)
    run_dir.write_summary(res)
    run_dir.finish()
    return res


def _print_table(res: dict[str, Any]) -> None:
    print(f"policy {res['policy']}  perturbation {res['perturbation']}  seed {res['seed']}")
    for task, r in res["per_task"].items():
        lo, hi = r["ci95"]
        print(f"  {task:14s} {r['success_rate']:6.1%}  [{lo:.1%}, {hi:.1%}]  n={r['episodes']}  mean length {r['mean_length']:.1f}")
    lo, hi = res["ci95"]
    print(f"  {'overall':14s} {res['success_rate']:6.1%}  [{lo:.1%}, {hi:.1%}]  n={res['episodes']}")
    print(f"summary: {res['run_dir']}/summary.json", file=sys.stderr)
