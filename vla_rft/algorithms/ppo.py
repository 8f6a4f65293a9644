"""PPO on action chunks (RL4VLA recipe, ALGORITHMS.md §2): chunk-level GAE and a critic.

Everything but the advantages and the value loss is the shared clipped policy-gradient
update (:mod:`vla_rft.algorithms.pg`). Rollouts come from any rollout source through
:class:`~vla_rft.algorithms.rollout.ChunkCollector`.

Shared actor-critic: the value MLP reads the trunk's pooled feature. The value loss therefore
updates the shared trunk, but never the head (its mean and noise parameters): tested in
``tests/algorithms/test_ppo.py``. During the value warm-up only the value MLP is stepped
(gradients of every other parameter are dropped), so the policy is unchanged until the critic
is calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vla_rft.algorithms.losses import clipped_value_loss, normalize_advantages
from vla_rft.algorithms.pg import ClippedPG, PGBatch, PGConfig, flatten_rollout
from vla_rft.algorithms.rollout import ChunkRollout, chunk_gae
from vla_rft.errors import UserInputError


@dataclass
class PPOConfig(PGConfig):
    """PPO hyperparameters (defaults follow RL4VLA where it reports them)."""

    gamma: float = 0.99
    """Per-env-step discount; a chunk of n executed steps discounts by gamma^n."""
    gae_lambda: float = 0.95
    """GAE lambda, applied once per chunk step."""
    value_clip: float | None = 0.2
    """The clipped value estimate stays within this of the rollout's value (None: no clipping)."""
    huber_delta: float = 10.0
    """Huber delta of the value loss (RL4VLA 10)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    norm_adv: bool = True
    """Normalize advantages over the batch."""
    value_warmup_iters: int = 0
    """Iterations at the start that update only the value MLP."""


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - pred) / Var(target): 1 is a perfect critic, 0 a constant one."""
    var = float(np.var(target))
    return float("nan") if var == 0 else 1.0 - float(np.var(target - pred)) / var


class PPO(ClippedPG):
    """Clipped policy gradient with GAE advantages and a clipped Huber value loss."""

    name = "ppo"

    def prepare(self, rollout: ChunkRollout) -> tuple[PGBatch, dict[str, float]]:
        cfg = self.cfg
        adv, ret = chunk_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.steps,
                             rollout.terminated.astype(np.float64), rollout.done.astype(np.float64),
                             rollout.valid, cfg.gamma, cfg.gae_lambda)
        batch = flatten_rollout(rollout, adv, np.ones_like(adv), ret, self.policy.device)
        if cfg.norm_adv:
            batch = batch._replace(advantages=normalize_advantages(batch.advantages))
        valid = rollout.valid
        return batch, {"explained_variance": explained_variance(rollout.values[valid], ret[valid])}

    def value_only(self, iteration: int) -> bool:
        return iteration < self.cfg.value_warmup_iters

    def critic_loss(self, batch: PGBatch, ev: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if ev.value is None:
            raise UserInputError("PPO needs a policy with a value head (value_head: true)")
        v_loss = clipped_value_loss(ev.value, batch.values, batch.returns, self.cfg.value_clip, self.cfg.huber_delta)
        return self.cfg.vf_coef * v_loss, {"loss/value": float(v_loss.detach())}
