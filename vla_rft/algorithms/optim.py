"""The optimizer of RL fine-tuning: AdamW with one learning rate per parameter group.

RL recipes give the policy, its exploration noise and the value head different learning rates
(RL4VLA: 1e-4 policy, 3e-3 value head; VLA-RFT: 1e-6 policy, 1e-5 noise net). The schedule
is a pure function of the iteration (warm-up then cosine, :func:`vla_rft.policies.training.cosine_lr`),
so resuming needs no scheduler state.
It follows the run's *progress* (see :func:`lr_factor`), not the iteration count alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vla_rft.policies.training import OptimConfig, cosine_lr

GROUPS = ("policy", "noise", "value")


@dataclass
class RLOptimConfig:
    """AdamW with a learning rate per parameter group, linear warm-up then cosine over iterations."""

    lr_policy: float = 1e-4
    """Peak learning rate of the trunk and the head's mean (RL4VLA 1e-4)."""
    lr_noise: float = 1e-4
    """Peak learning rate of the exploration scale (the Gaussian log-std or the flow noise net)."""
    lr_value: float = 3e-3
    """Peak learning rate of the value MLP (RL4VLA 3e-3)."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices (0 keeps the policy near its pretrained weights only through the RL loss)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam (beta1, beta2)."""
    warmup_iters: int = 0
    """Iterations of linear learning-rate warm-up."""
    min_lr_ratio: float = 1.0
    """The cosine decays to lr times this at the last iteration (1 keeps the lr constant)."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this (RL4VLA 10; 0 disables)."""


def make_rl_optimizer(policy: Any, cfg: RLOptimConfig) -> torch.optim.AdamW:
    """AdamW over ``policy.parameter_groups()``; each torch group remembers its name and peak lr."""
    peak = {"policy": cfg.lr_policy, "noise": cfg.lr_noise, "value": cfg.lr_value}
    groups = []
    for name, params in policy.parameter_groups().items():
        params = [p for p in params if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "weight_decay": cfg.weight_decay if decay else 0.0,
                               "lr": peak[name], "group": name, "peak_lr": peak[name]})
    return torch.optim.AdamW(groups, betas=(cfg.betas[0], cfg.betas[1]))


def lr_factor(progress: float, total: int, cfg: RLOptimConfig) -> float:
    """Multiplier of every group's peak lr at ``progress`` in [0, 1] of a run of ``total``
    iterations: the trainer's progress is the larger of the iteration and wall-clock fractions,
    so a run stopped by its ``--minutes`` budget reaches the end of its schedule whatever the
    machine's speed (warm-up is counted in iterations of ``total``)."""
    unit = OptimConfig(lr=1.0, warmup_steps=cfg.warmup_iters, min_lr_ratio=cfg.min_lr_ratio)
    return cosine_lr(min(max(progress, 0.0), 1.0) * total, total, unit)


def set_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> dict[str, float]:
    """Set every group's lr to peak * factor; returns the lr per named group (for logging)."""
    out: dict[str, float] = {}
    for g in optimizer.param_groups:
        g["lr"] = g["peak_lr"] * factor
        out[f"lr/{g['group']}"] = g["lr"]
    return out


def clip_and_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global grad norm (before clipping), clipping to ``max_norm`` when it is > 0."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in with_grad]))
