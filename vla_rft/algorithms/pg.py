"""The clipped policy-gradient update PPO and GRPO share (ALGORITHMS.md §2-3).

:func:`clipped_policy_loss` is the loss, readable top to bottom; :class:`ClippedPG` is the
learner around it: advantages come from the algorithm (:meth:`ClippedPG.prepare`, GAE for PPO,
group-normalized verified rewards for GRPO), then epochs x minibatches of clipped steps with
an optional ``target_kl`` early stop, the extra loss terms (:mod:`vla_rft.algorithms.losses`),
gradient clipping, and the KL to the starting policy logged.

**Ratios over executed steps.** A chunk's log-probability is a sum over its h steps of A
Gaussian dims each; only the steps the env executed count (``mask``). Three ratio levels:

- ``chunk`` (default): one ratio per chunk, exp(sum of per-step log-ratios): the macro-action
  ratio (RL4VLA). A 56-dimensional density ratio is volatile (a small per-dim change
  multiplies); the presets pair it with ``target_kl``.
- ``step``: one ratio per executed step, each clipped (token-level PPO, as LLM and tokenized
  VLA RL do), the surrogate averaged over the chunk's executed steps.
- ``chunk_mean``: one ratio per chunk from the *mean* per-step log-ratio (GSPO's
  length-normalized sequence ratio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from vla_rft.algorithms.losses import LossTerm, apply_terms, check_finite, forward_kl, subsample_obs
from vla_rft.algorithms.optim import (
    RLOptimConfig,
    clip_and_norm,
    lr_factor,
    make_rl_optimizer,
    set_lr_factor,
)
from vla_rft.algorithms.rollout import ChunkRollout, flat_obs
from vla_rft.errors import UserInputError

RATIO_LEVELS = ("chunk", "step", "chunk_mean")


@dataclass
class PGConfig:
    """What every clipped policy-gradient algorithm shares."""

    clip: float = 0.2
    """Ratio clip epsilon."""
    dual_clip: float | None = None
    """Dual-clip bound c for negative advantages (None disables; VLA-RFT uses 3)."""
    ratio: str = "chunk"
    """Ratio level over executed steps: chunk (one per chunk, RL4VLA's macro-action), step (one clipped ratio per executed step) or chunk_mean (GSPO: exp of the mean per-step log-ratio)."""
    ent_coef: float = 0.0
    """Entropy bonus weight (per executed step)."""
    epochs: int = 1
    """Passes over each batch."""
    minibatches: int = 4
    """Minibatches per epoch."""
    target_kl: float | None = None
    """Stop the epochs at the first minibatch whose approx KL exceeds 1.5 x this, unstepped (SB3's rule; None: off)."""
    kl_samples: int = 64
    """States of each batch used for the logged KL to the starting policy."""


class PGBatch(NamedTuple):
    """The plain data a policy-gradient loss reads; M transitions (chunk steps). Loss terms
    (:class:`~vla_rft.algorithms.losses.LossTerm`) read ``obs`` and ``latents``."""

    obs: dict[str, Any]  # contract batch of M rows
    latents: torch.Tensor  # (M, L, h, A) as sampled
    log_probs: torch.Tensor  # (M, h) per-step log pi_old
    mask: torch.Tensor  # (M, h) executed steps
    advantages: torch.Tensor  # (M,)
    weights: torch.Tensor  # (M,) per-chunk loss weights (mean 1 over the batch)
    returns: torch.Tensor  # (M,) value targets (zeros without a critic)
    values: torch.Tensor  # (M,) V_old (zeros without a critic)

    def rows(self, sel: np.ndarray) -> PGBatch:
        idx = torch.as_tensor(sel, device=self.latents.device)
        obs = {k: (v[sel] if not isinstance(v, list) else [v[i] for i in sel]) for k, v in self.obs.items()}
        return PGBatch(obs, *(t[idx] for t in self[1:]))


def masked_rows_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's masked entries: (M, h), (M, h) -> (M,)."""
    m = mask.to(x.dtype)
    return (x * m).sum(dim=-1) / m.sum(dim=-1).clamp_min(1.0)


def clipped_policy_loss(new_logp: torch.Tensor, batch: PGBatch, clip: float, dual_clip: float | None,
                        level: str) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate over executed steps at ratio ``level``, optional dual clip (Ye et
    al. 2020: a negative-advantage sample's loss is bounded by ``dual_clip * |A|``); per-chunk
    surrogates are averaged with ``batch.weights``. ``new_logp`` is (M, h)."""
    mask = batch.mask.to(new_logp.dtype)
    step_logratio = (new_logp - batch.log_probs) * mask  # (M, h), 0 on unexecuted steps
    if level == "step":
        logratio, adv = step_logratio, batch.advantages[:, None].expand_as(step_logratio)
    elif level == "chunk":
        logratio, adv = step_logratio.sum(dim=-1), batch.advantages
    elif level == "chunk_mean":
        logratio, adv = step_logratio.sum(dim=-1) / mask.sum(dim=-1).clamp_min(1.0), batch.advantages
    else:
        raise ValueError(f"ratio level must be one of {RATIO_LEVELS}, got '{level}'")
    ratio = torch.exp(logratio)
    surr = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip))
    if dual_clip is not None:
        surr = torch.where(adv < 0, torch.min(surr, -adv * dual_clip), surr)
    if level == "step":
        surr = masked_rows_mean(surr, batch.mask)  # (M,)
    loss = (batch.weights * surr).mean()
    with torch.no_grad():
        k3 = (ratio - 1.0) - logratio  # k3 estimate of KL(pi_old || pi), per ratio
        clipped = ((ratio - 1.0).abs() > clip).to(ratio.dtype)
        if level == "step":
            approx_kl, clip_frac = masked_rows_mean(k3, batch.mask).mean(), masked_rows_mean(clipped, batch.mask).mean()
            ratio_max = ratio[batch.mask].max() if batch.mask.any() else ratio.new_ones(())
        else:
            approx_kl, clip_frac, ratio_max = k3.mean(), clipped.mean(), ratio.max()
    return loss, {"approx_kl": float(approx_kl), "clip_frac": float(clip_frac), "ratio_max": float(ratio_max)}


def flatten_rollout(ro: ChunkRollout, advantages: np.ndarray, weights: np.ndarray, returns: np.ndarray,
                    device: Any) -> PGBatch:
    """The valid (t, n) slots of a rollout as one :class:`PGBatch`; the (T, N) arrays are flattened alike."""
    idx = np.flatnonzero(ro.valid.reshape(-1))

    def t(a: np.ndarray) -> torch.Tensor:  # (T, N, ...) -> the valid rows of (T * N, ...)
        return torch.as_tensor(np.reshape(a, (-1, *a.shape[2:]))[idx], dtype=torch.float32, device=device)

    latents = ro.latents.reshape(-1, *ro.latents.shape[2:])[torch.as_tensor(idx)].to(device)
    return PGBatch(flat_obs(ro.obs, idx), latents, t(ro.log_probs), t(ro.executed).bool(), t(advantages),
                   t(weights), t(returns), t(ro.values))


class ClippedPG:
    """The learner: ``update(rollout, iteration, progress, rng) -> metrics``.

    Subclasses define :meth:`prepare` (a rollout -> a :class:`PGBatch` with advantages) and may
    extend :meth:`loss` (PPO adds its value loss) and :meth:`value_only` (PPO's warm-up).

    Args:
        policy: the policy being trained.
        ref_policy: the frozen starting policy (for loss terms and the logged KL).
        cfg: the algorithm's config (a :class:`PGConfig`).
        optim: optimizer and learning rates per parameter group.
        total_iters: iterations the lr schedule spans (the schedule follows ``progress``).
        terms: extra loss terms ``term(policy, ref_policy, batch) -> (loss, metrics)``.
    """

    name = "pg"

    def __init__(self, policy: Any, ref_policy: Any, cfg: Any, optim: RLOptimConfig, total_iters: int,
                 terms: list[LossTerm] | None = None) -> None:
        if cfg.ratio not in RATIO_LEVELS:
            raise UserInputError(f"{self.name}.ratio must be one of {RATIO_LEVELS}, got '{cfg.ratio}'")
        self.policy, self.ref_policy, self.cfg, self.optim_cfg = policy, ref_policy, cfg, optim
        self.total_iters = total_iters
        self.terms = list(terms or [])
        self.optimizer = make_rl_optimizer(policy, optim)
        self._value_ids = {id(p) for p in policy.parameter_groups().get("value", [])}

    # ------------------------------------------------------------------ algorithm hooks
    def prepare(self, data: Any) -> tuple[PGBatch, dict[str, float]]:
        raise NotImplementedError

    def value_only(self, iteration: int) -> bool:
        return False

    def critic_loss(self, batch: PGBatch, ev: Any) -> tuple[torch.Tensor | float, dict[str, float]]:
        """A critic's loss from the same trunk pass (PPO's value loss); none by default."""
        return 0.0, {}

    def loss(self, batch: PGBatch, policy_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped surrogate minus the entropy bonus (``policy_weight`` 0 keeps only the metrics)
        plus the critic's loss, all from one trunk pass."""
        ev = self.policy.evaluate(batch.obs, batch.latents)
        pg_loss, metrics = clipped_policy_loss(ev.step_log_prob, batch, self.cfg.clip, self.cfg.dual_clip,
                                               self.cfg.ratio)
        entropy = (batch.weights * masked_rows_mean(ev.step_entropy, batch.mask)).mean()
        critic, critic_metrics = self.critic_loss(batch, ev)
        metrics.update({"loss/policy": float(pg_loss.detach()), "entropy": float(entropy.detach()), **critic_metrics})
        return policy_weight * (pg_loss - self.cfg.ent_coef * entropy) + critic, metrics

    # ------------------------------------------------------------------ the update
    def update(self, data: Any, iteration: int, progress: float, rng: np.random.Generator) -> dict[str, float]:
        """One update on a batch of rollouts; ``rng`` shuffles minibatches, ``progress`` in [0, 1]
        sets the learning rate (the fraction of the run's budget spent)."""
        cfg = self.cfg
        batch, out = self.prepare(data)
        lrs = set_lr_factor(self.optimizer, lr_factor(progress, self.total_iters, self.optim_cfg))
        value_only = self.value_only(iteration)
        sums: dict[str, float] = {}
        n_mb, stopped = 0, False
        for epoch in range(cfg.epochs):
            for mb, sel in enumerate(np.array_split(rng.permutation(len(batch.advantages)), cfg.minibatches)):
                if len(sel) == 0 or stopped:  # after a stop the epochs still draw their permutations,
                    continue  # so the rng stream (next iterations' shuffles) does not depend on it
                metrics = self._step(batch.rows(sel), value_only, f"iteration {iteration}, epoch {epoch}, minibatch {mb}")
                if metrics is None:  # target_kl reached: this minibatch was not stepped
                    stopped = True
                    continue
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_mb += 1
        out.update({k: v / max(n_mb, 1) for k, v in sums.items()})
        out.update(lrs)
        out.update({"updates": float(n_mb), "early_stopped": float(stopped), "value_only": float(value_only)})
        out["kl_to_start"] = self.kl_to_start(batch.obs, seed=iteration)
        return out

    def _step(self, batch: PGBatch, value_only: bool, where: str) -> dict[str, float] | None:
        """Loss, finiteness checks, backward, clip, optimizer step for one minibatch; None (no
        step) when the approx KL is past ``1.5 * target_kl``."""
        loss, metrics = self.loss(batch, policy_weight=0.0 if value_only else 1.0)
        if self.cfg.target_kl is not None and not value_only and metrics["approx_kl"] > 1.5 * self.cfg.target_kl:
            return None
        if self.terms and not value_only:
            extra, extra_metrics = apply_terms(self.terms, self.policy, self.ref_policy, batch)
            loss = loss + extra
            metrics.update(extra_metrics)
        check_finite(loss, f"the {self.name.upper()} loss", where, metrics)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if value_only:  # only the value MLP learns (PPO's warm-up)
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
        return float(forward_kl(self.policy, self.ref_policy, subsample_obs(obs, self.cfg.kl_samples), gen).mean())
