"""Behaviour cloning as a trainer algorithm (``vla-rft pretrain``; supervised fine-tuning).

Each iteration samples chunk windows uniformly over every frame of every dataset (padded steps
past an episode's end are masked out of the loss), takes one AdamW step on the policy's
imitation loss plus any extra loss terms (:mod:`vla_rft.algorithms.losses`: L2-to-init, KL to a
reference policy, ...), with the learning rate on a warm-up + cosine schedule that follows the
trainer's progress.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_rft.algorithms.losses import LossTerm, apply_terms
from vla_rft.algorithms.optim import clip_and_norm
from vla_rft.policies.training import OptimConfig, cosine_lr, make_adamw, set_lr


class BatchView:
    """A BC batch as loss terms read it (``obs``: the windows' observations, a contract batch)."""

    def __init__(self, batch: dict[str, Any]) -> None:
        self.obs = batch


class OfflineAlgorithm:
    """What every algorithm learning from datasets (``self.windows``) shares: no env steps, no
    rollout metrics, and fixed probe states for the logged KL to the start."""

    windows: Any

    def probe_states(self, reference: Any, seed: int, count: int = 64) -> dict[str, Any]:
        """``count`` evenly spaced frames of the training data (where the logged KL is measured)."""
        n = len(self.windows)
        return self.windows.batch(np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64)))

    def env_steps(self, batch: Any) -> int:
        return 0

    def batch_metrics(self, batch: Any, seconds: float) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


class BC(OfflineAlgorithm):
    """Behaviour cloning on :class:`~vla_rft.data.chunks.ChunkWindows`.

    Args:
        policy: the policy being trained (in train mode: augmentation applies).
        windows: the chunk windows to sample from.
        optim: AdamW and the learning-rate schedule.
        total_steps: steps the schedule spans.
        batch_size: windows per step.
        rng: the trainer's numpy Generator (window sampling).
        terms: extra loss terms; ``ref_policy`` is what they compare against.
    """

    def __init__(self, policy: Any, windows: Any, optim: OptimConfig, total_steps: int, batch_size: int,
                 rng: np.random.Generator, terms: list[LossTerm] | None = None, ref_policy: Any = None) -> None:
        self.policy, self.windows, self.optim_cfg = policy, windows, optim
        self.total_steps, self.batch_size, self.rng = total_steps, batch_size, rng
        self.terms, self.ref_policy = list(terms or []), ref_policy
        self.optimizer = make_adamw(list(policy.parameters()), optim)
        self.losses: list[float] = []  # every step's loss in this process (the summary's first/last means)

    def collect(self, iteration: int) -> dict[str, Any]:
        return self.windows.sample(self.batch_size, self.rng)

    def loss(self, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        """The supervised loss of a batch and its metrics (the policy's imitation loss)."""
        return self.policy.bc_loss(batch)

    def update(self, batch: dict[str, Any], iteration: int, progress: float, rng: np.random.Generator
               ) -> dict[str, float]:
        lr = cosine_lr(progress * self.total_steps, self.total_steps, self.optim_cfg)
        set_lr(self.optimizer, lr)
        loss, metrics = self.loss(batch)
        if self.terms:
            extra, extra_metrics = apply_terms(self.terms, self.policy, self.ref_policy, BatchView(batch))
            loss = loss + extra
            metrics = {**metrics, **extra_metrics}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(clip_and_norm(list(self.policy.parameters()), self.optim_cfg.grad_clip))
        self.optimizer.step()
        self.losses.append(float(metrics["loss"]))
        return {**metrics, "lr": lr, "grad_norm": grad_norm}

