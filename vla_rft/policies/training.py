"""Optimizer plumbing shared by every trainer of a policy: AdamW groups, the cosine schedule,
and optimizer state in and out of safetensors checkpoints (no pickle).

torch is imported inside the functions: command modules import :class:`OptimConfig` at start-up
and ``vla-rft --help`` must not pay for torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vla_rft.checkpoint import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay (the usual recipe for small transformers)."""

    lr: float = 3e-4
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay, applied to matrices and conv kernels only (not to biases or norm gains)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam (beta1, beta2)."""
    warmup_steps: int = 100
    """Steps of linear warm-up from 0 to the peak learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr times this at the last step."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""


def make_adamw(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW with decay on tensors of rank >= 2 only: decaying gains and biases hurts small nets."""
    import torch

    decay = [p for p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]))


def cosine_lr(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: a pure function, so resuming needs no
    scheduler state."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_to_checkpoint(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors for optimizer.safetensors, JSON for the rest): ``state.<param>.<key>`` tensors
    plus the param groups (hyperparameters and param indices) and any non-tensor state."""
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_checkpoint(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor] | None,
                              meta: dict[str, Any] | None) -> None:
    """Restore what :func:`optimizer_to_checkpoint` wrote into a freshly built ``optimizer``."""
    if tensors is None or meta is None:
        raise CheckpointError("checkpoint has no optimizer state: cannot resume training exactly")
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state does not match the model ({e})") from e
