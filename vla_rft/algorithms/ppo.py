"""PPO on action chunks (RL4VLA recipe, ALGORITHMS.md §2), as an importable update step.

The whole loss reads top to bottom in :func:`ppo_loss`. :class:`PPO` owns the optimizer and
runs GAE, advantage normalization, epochs x minibatches, gradient clipping, the value
warm-up, and the extra loss terms (:mod:`vla_rft.algorithms.losses`). Rollouts come from
:class:`~vla_rft.algorithms.rollout.ChunkRollout` (any source with that shape: a sim vector
env, Ray workers, later an imagined env).

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

from vla_rft.algorithms.losses import (
    LossTerm,
    MiniBatch,
    apply_terms,
    check_finite,
    clipped_policy_loss,
    clipped_value_loss,
    forward_kl,
    normalize_advantages,
    subsample_obs,
)
from vla_rft.algorithms.optim import (
    RLOptimConfig,
    clip_and_norm,
    lr_factor,
    make_rl_optimizer,
    set_lr_factor,
)
from vla_rft.algorithms.rollout import ChunkRollout, chunk_gae, flat_obs


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults follow RL4VLA where it reports them)."""

    gamma: float = 0.99
    """Per-env-step discount; a chunk of n executed steps discounts by gamma^n."""
    gae_lambda: float = 0.95
    """GAE lambda, applied once per chunk step."""
    clip: float = 0.2
    """Ratio clip epsilon."""
    dual_clip: float | None = None
    """Dual-clip bound c for negative advantages (None disables; VLA-RFT uses 3)."""
    value_clip: float = 0.2
    """The clipped value estimate stays within this of the rollout's value."""
    huber_delta: float = 10.0
    """Huber delta of the value loss (RL4VLA 10)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Entropy bonus weight (RL4VLA 0)."""
    epochs: int = 1
    """Passes over each rollout batch (RL4VLA 1)."""
    minibatches: int = 4
    """Minibatches per epoch."""
    target_kl: float | None = None
    """Stop the epochs at the first minibatch whose approx KL exceeds 1.5 x this, unstepped (SB3's rule; None: off)."""
    norm_adv: bool = True
    """Normalize advantages over the batch."""
    value_warmup_iters: int = 0
    """Iterations at the start that update only the value MLP."""
    kl_samples: int = 64
    """States of each batch used for the logged KL to the starting policy."""


def ppo_loss(policy: Any, batch: MiniBatch, cfg: PPOConfig, *, policy_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The PPO loss of one minibatch, top to bottom (extra terms are added by the caller).

    ``policy_weight`` is 0 during the value warm-up (the surrogate is still computed for its
    metrics) and 1 afterwards."""
    ev = policy.evaluate(batch.obs, batch.latents)  # log_prob (M,), entropy (M,), value (M,)
    pg_loss, pg_metrics = clipped_policy_loss(ev.log_prob, batch.log_probs, batch.advantages, cfg.clip, cfg.dual_clip)
    if ev.value is None:
        raise ValueError("PPO needs a policy with a value head (value_head: true)")
    v_loss = clipped_value_loss(ev.value, batch.values, batch.returns, cfg.value_clip, cfg.huber_delta)
    entropy = ev.entropy.mean()
    loss = policy_weight * (pg_loss - cfg.ent_coef * entropy) + cfg.vf_coef * v_loss
    metrics = {"loss/policy": float(pg_loss.detach()), "loss/value": float(v_loss.detach()),
               "entropy": float(entropy.detach()), **pg_metrics}
    return loss, metrics


def explained_variance(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - Var(target - pred) / Var(target): 1 is a perfect critic, 0 a constant one."""
    var = float(np.var(target))
    return float("nan") if var == 0 else 1.0 - float(np.var(target - pred)) / var


class PPO:
    """The PPO learner: ``update(rollout, iteration, rng) -> metrics``.

    Args:
        policy: the policy being trained (needs a value head).
        ref_policy: the frozen starting policy (for extra terms and the logged KL).
        cfg: PPO hyperparameters.
        optim: optimizer and learning rates per parameter group.
        total_iters: iterations the lr schedule spans.
        terms: extra loss terms ``term(policy, ref_policy, batch) -> (loss, metrics)``.
    """

    def __init__(self, policy: Any, ref_policy: Any, cfg: PPOConfig, optim: RLOptimConfig, total_iters: int,
                 terms: list[LossTerm] | None = None) -> None:
        self.policy, self.ref_policy, self.cfg, self.optim_cfg = policy, ref_policy, cfg, optim
        self.total_iters = total_iters
        self.terms = list(terms or [])
        self.optimizer = make_rl_optimizer(policy, optim)
        self._value_ids = {id(p) for p in policy.parameter_groups()["value"]}

    def advantages(self, rollout: ChunkRollout) -> tuple[np.ndarray, np.ndarray]:
        """GAE advantages and returns (T, N) of a rollout."""
        return chunk_gae(rollout.rewards, rollout.values, rollout.next_values, rollout.steps,
                         rollout.terminated.astype(np.float64), rollout.done.astype(np.float64),
                         rollout.valid, self.cfg.gamma, self.cfg.gae_lambda)

    def update(self, rollout: ChunkRollout, iteration: int, rng: np.random.Generator) -> dict[str, float]:
        """One PPO update on a rollout; ``rng`` shuffles minibatches."""
        cfg, dev = self.cfg, self.policy.device
        adv, ret = self.advantages(rollout)
        idx = np.flatnonzero(rollout.valid.reshape(-1))  # valid (t, n) slots, flattened
        obs = flat_obs(rollout.obs, idx)
        latents = rollout.latents.reshape(-1, *rollout.latents.shape[2:])[idx].to(dev)
        t = lambda a: torch.as_tensor(a.reshape(-1)[idx], dtype=torch.float32, device=dev)
        advantages = t(adv)
        if cfg.norm_adv:
            advantages = normalize_advantages(advantages)
        old_logp, old_values, returns = t(rollout.log_probs), t(rollout.values), t(ret)
        lrs = set_lr_factor(self.optimizer, lr_factor(iteration, self.total_iters, self.optim_cfg))
        warmup = iteration < cfg.value_warmup_iters
        sums: dict[str, float] = {}
        n_mb, stopped = 0, False
        for epoch in range(cfg.epochs):
            for mb, sel in enumerate(np.array_split(rng.permutation(len(idx)), cfg.minibatches)):
                if len(sel) == 0 or stopped:  # after a stop the epochs still draw their permutations,
                    continue  # so the rng stream (next iterations' shuffles) does not depend on it
                sel_t = torch.as_tensor(sel, device=dev)
                batch = MiniBatch({k: (v[sel] if not isinstance(v, list) else [v[i] for i in sel]) for k, v in obs.items()},
                                  latents[sel_t], old_logp[sel_t], advantages[sel_t], returns[sel_t], old_values[sel_t])
                metrics = self._step(batch, warmup, f"iteration {iteration}, epoch {epoch}, minibatch {mb}")
                if metrics is None:  # target_kl reached: this minibatch was not stepped
                    stopped = True
                    continue
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_mb += 1
        out = {k: v / max(n_mb, 1) for k, v in sums.items()}
        out.update(lrs)
        out["updates"] = float(n_mb)
        out["early_stopped"] = float(stopped)
        out["value_warmup"] = float(warmup)
        out["explained_variance"] = explained_variance(rollout.values.reshape(-1)[idx], ret.reshape(-1)[idx])
        out["kl_to_start"] = self.kl_to_start(obs, seed=iteration)
        return out

    def _step(self, batch: MiniBatch, warmup: bool, where: str) -> dict[str, float] | None:
        """Loss, finiteness checks, backward, clip, optimizer step for one minibatch; None (no
        step) when the approx KL is past ``1.5 * target_kl``."""
        loss, metrics = ppo_loss(self.policy, batch, self.cfg, policy_weight=0.0 if warmup else 1.0)
        if self.cfg.target_kl is not None and not warmup and metrics["approx_kl"] > 1.5 * self.cfg.target_kl:
            return None
        if self.terms and not warmup:
            extra, extra_metrics = apply_terms(self.terms, self.policy, self.ref_policy, batch)
            loss = loss + extra
            metrics.update(extra_metrics)
        check_finite(loss, "the PPO loss", where, metrics)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if warmup:  # only the value MLP learns during the warm-up
            for p in self.policy.parameters():
                if id(p) not in self._value_ids:
                    p.grad = None
        grad_norm = clip_and_norm(list(self.policy.parameters()), self.optim_cfg.grad_clip)
        check_finite(grad_norm, "the gradient norm", where)
        self.optimizer.step()
        metrics["loss/total"] = float(loss.detach())
        metrics["grad_norm"] = float(grad_norm)
        return metrics

    @torch.no_grad()
    def kl_to_start(self, obs: dict[str, Any], seed: int) -> float:
        """KL(pi_0 || pi) on up to ``kl_samples`` of the batch's states (see :func:`forward_kl`)."""
        gen = torch.Generator(device=self.policy.device).manual_seed(10_007 * (seed + 1))
        sub = subsample_obs(obs, self.cfg.kl_samples)
        return float(forward_kl(self.policy, self.ref_policy, sub, gen).mean())
