"""``vla-rft wise-ft``: weight-space interpolation between a starting and a fine-tuned policy.

WiSE-FT (Wortsman et al., 2022): θ(α) = (1 − α)·θ₀ + α·θ_ft. α = 0 is the starting policy,
α = 1 the fine-tuned one; in between, a model that often keeps more of what θ₀ knew at a
smaller cost in the target gain. The sweep evaluates each α on the target and on the
pretraining tasks (the same seeded episodes for every α) and writes one run directory:
``summary.json`` (per α, per task, Wilson intervals), ``checkpoints/alpha_<α>`` (each
interpolated policy, loadable by every command) and the figures ``vla-rft report`` draws.

    vla-rft wise-ft --start pretrained:tiny_kp_4task --finetuned runs/quickstart/finetune/checkpoints/last \
        --target press_button --retain_tasks '[open_drawer,close_drawer,lift_cube,push_cube]'
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from vla_rft.errors import UserInputError
from vla_rft.run import LoggingConfig


@dataclass
class WiseFTConfig:
    """Interpolate the weights of a starting and a fine-tuned policy; evaluate target and retention per alpha."""

    start: str | None = None
    """Required. The starting policy (checkpoint directory or pretrained NAME), alpha = 0."""
    finetuned: str | None = None
    """Required. The fine-tuned policy of the same architecture, alpha = 1."""
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """Interpolation weights of the fine-tuned policy, each in [0, 1]."""
    target: str | None = None
    """Required. The task the policy was fine-tuned on."""
    retain_tasks: list[str] = field(default_factory=list)
    """Pretraining tasks whose success is kept (retention)."""
    episodes: int = 100
    """Target episodes per alpha (the same seeds for every alpha)."""
    retain_episodes: int = 25
    """Episodes per retention task and alpha."""
    seed: int = 200000
    """Episode i uses seed + i."""
    num_envs: int = 10
    """Episodes run side by side."""
    json: bool = False
    """Print one JSON object (the summary) on stdout."""
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(wandb="disabled"))
    """Run directory and wandb settings."""


def interpolate(start: Any, finetuned: Any, alpha: float) -> Any:
    """A copy of ``finetuned`` with weights (1 - alpha) * start + alpha * finetuned (floating
    tensors; others must be equal). Raises CheckpointError when the two differ in architecture."""
    import copy

    import torch

    from vla_rft.checkpoint import CheckpointError

    a, b = start.state_dict(), finetuned.state_dict()
    if a.keys() != b.keys():
        diff = sorted(set(a) ^ set(b))[:5]
        raise CheckpointError(f"the two policies have different parameters (e.g. {', '.join(diff)}): not one architecture")
    out = {}
    for k, tb in b.items():
        ta = a[k]
        if ta.shape != tb.shape:
            raise CheckpointError(f"parameter '{k}' has shape {tuple(ta.shape)} in the start and {tuple(tb.shape)} "
                                  "in the fine-tuned policy: not one architecture")
        out[k] = torch.lerp(ta, tb, alpha) if tb.is_floating_point() else tb
    policy = copy.deepcopy(finetuned)
    policy.load_state_dict(out, strict=True)
    return policy.eval()


def _check(cfg: WiseFTConfig) -> None:
    import sims

    for name in ("start", "finetuned", "target"):
        if not getattr(cfg, name):
            raise UserInputError(f"--{name} is required")
    for t in [str(cfg.target), *cfg.retain_tasks]:
        sims.get_task_class(t)
    if not cfg.alphas or any(not 0.0 <= a <= 1.0 for a in cfg.alphas):
        raise UserInputError(f"--alphas must be a non-empty list of numbers in [0, 1], got {cfg.alphas}")
    if cfg.episodes < 1 or cfg.retain_episodes < 0 or cfg.num_envs < 1:
        raise UserInputError("--episodes and --num_envs must be >= 1, --retain_episodes >= 0")


def sweep(cfg: WiseFTConfig) -> dict[str, Any]:
    """Evaluate every alpha; returns the summary written to summary.json."""
    import torch

    from vla_rft.evaluation.harness import EvalSettings, evaluate
    from vla_rft.policies.base import load_policy
    from vla_rft.run import open_run

    _check(cfg)
    torch.set_num_threads(1)
    start, finetuned = load_policy(str(cfg.start)), load_policy(str(cfg.finetuned))
    run = open_run("wise-ft", cfg, cfg.logging)
    target = str(cfg.target)
    tasks = [target, *(cfg.retain_tasks if cfg.retain_episodes else [])]
    episodes = {t: cfg.episodes if t == target else cfg.retain_episodes for t in tasks}
    settings = EvalSettings(episodes=cfg.episodes, seed=cfg.seed, num_envs=cfg.num_envs,
                            cameras=list(finetuned.spec.cameras), image_size=int(finetuned.spec.image_size[0]))
    rows = []
    for alpha in cfg.alphas:
        policy = interpolate(start, finetuned, float(alpha))
        policy.save(run.checkpoints / f"alpha_{alpha:.2f}")
        with torch.inference_mode():
            res = evaluate(policy, tasks, settings, episodes=episodes)
        retain = [res["per_task"][t]["success_rate"] for t in tasks[1:]]
        rows.append({"alpha": float(alpha), "per_task": res["per_task"],
                     "target": res["per_task"][target]["success_rate"],
                     "retention_mean": sum(retain) / len(retain) if retain else None})
        print(f"wise-ft alpha {alpha:.2f}: target {rows[-1]['target']:.2f}"
              + (f", pretraining tasks {rows[-1]['retention_mean']:.2f}" if retain else ""), file=sys.stderr, flush=True)
    summary = {"run_dir": str(run.path), "start": cfg.start, "finetuned": cfg.finetuned, "target": target,
               "retain_tasks": tasks[1:], "seed": cfg.seed, "rows": rows}
    run.write_summary(summary)
    run.finish()
    return summary


def run(cfg: WiseFTConfig) -> int:
    from vla_rft.cli import print_json

    s = sweep(cfg)
    if cfg.json:
        print_json(s)
        return 0
    print(f"{'alpha':>6} {'target':>22}" + ("  pretraining tasks (mean)" if s["retain_tasks"] else ""))
    for r in s["rows"]:
        t = r["per_task"][s["target"]]
        lo, hi = t["ci95"]
        line = f"{r['alpha']:6.2f} {t['success_rate']:6.0%} [{lo:.0%}, {hi:.0%}] n={t['episodes']:<4}"
        if r["retention_mean"] is not None:
            line += f"  {r['retention_mean']:.0%}"
        print(line)
    print(f"checkpoints: {s['run_dir']}/checkpoints/alpha_*", file=sys.stderr)
    return 0
