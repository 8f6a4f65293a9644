"""Losses shared by PPO and GRPO, and the extra loss terms (regularizers) every trainer takes.

A **loss term** is any callable ``term(policy, ref_policy, batch) -> (loss, metrics)``: the
policy being trained, the frozen starting policy (pi_0, whose weights are theta*), and the
minibatch the RL loss is computed on. Trainers add ``sum(term losses)`` to their loss and log
the metrics under ``loss/<term.name>/...``. Forgetting-mitigation methods (ALGORITHMS.md §5:
kickstarting, L2-to-init, EWC, BC replay) are terms, not trainer subclasses.

KL to the starting policy (RL's Razor, logged by every run) is the **forward** KL,
KL(pi_0 || pi) = E_{s ~ batch, a ~ pi_0(.|s)}[log pi_0(a|s) - log pi(a|s)], estimated by
sampling fresh latents from pi_0 on the batch's states (:func:`forward_kl`). It is unbiased
(unlike the k1 estimator on pi's own samples, which estimates the reverse KL) and works for
any head whose log-prob is defined on its latent, the flow head's Euler chain included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from vla_rft.contract import TASK_KEY


class MiniBatch(NamedTuple):
    """The plain data a loss reads; M transitions (chunk steps)."""

    obs: dict[str, Any]  # contract batch of M rows
    latents: torch.Tensor  # (M, L, h, A) as sampled
    log_probs: torch.Tensor  # (M,) log pi_old(latent | obs)
    advantages: torch.Tensor  # (M,)
    returns: torch.Tensor  # (M,) value targets (zeros for GRPO)
    values: torch.Tensor  # (M,) V_old (zeros for GRPO)


class LossTerm(Protocol):
    """An extra loss added to an RL loss: ``term(policy, ref_policy, batch) -> (loss, metrics)``."""

    name: str

    def __call__(self, policy: Any, ref_policy: Any, batch: MiniBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ...


# ------------------------------------------------------------------------------- building blocks
def clipped_policy_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float,
                        dual_clip: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate (M,) -> scalar, with optional dual clip (Ye et al. 2020).

    The dual clip bounds the loss of a negative-advantage sample whose ratio exploded to
    ``dual_clip * |A|`` (VLA-RFT uses 3)."""
    logratio = new_logp - old_logp
    ratio = torch.exp(logratio)
    surr = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip))  # (M,)
    if dual_clip is not None:
        surr = torch.where(adv < 0, torch.min(surr, -adv * dual_clip), surr)
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - logratio).mean()  # k3 estimate of KL(pi_old || pi)
        clip_frac = ((ratio - 1.0).abs() > clip).float().mean()
    return surr.mean(), {"approx_kl": float(approx_kl), "clip_frac": float(clip_frac),
                         "ratio_max": float(ratio.detach().max())}


def clipped_value_loss(value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float,
                       huber_delta: float) -> torch.Tensor:
    """RL4VLA's value loss: max(Huber(V - G), Huber(V_clipped - G)), V_clipped within +-clip of V_old."""
    clipped = old_value + torch.clamp(value - old_value, -clip, clip)
    unclipped_loss = F.huber_loss(value, returns, reduction="none", delta=huber_delta)
    clipped_loss = F.huber_loss(clipped, returns, reduction="none", delta=huber_delta)
    return torch.max(unclipped_loss, clipped_loss).mean()


def normalize_advantages(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(A - mean) / (std + eps) over the batch (RL4VLA normalizes per batch)."""
    if adv.numel() < 2:
        return adv
    return (adv - adv.mean()) / (adv.std() + eps)


def forward_kl(policy: Any, ref_policy: Any, obs: dict[str, Any], generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """Per-state estimate (M,) of KL(pi_0 || pi): one latent a ~ pi_0(.|s), log pi_0(a|s) - log pi(a|s).

    Differentiable in ``policy`` (its gradient is that of the cross-entropy -log pi(a|s), the
    kickstarting gradient); the reference side is computed without gradient."""
    with torch.no_grad():
        ref_latent, ref_logp = ref_policy.sample_latent(obs, generator)
    return ref_logp - policy.log_prob(obs, ref_latent)


def subsample_obs(obs: dict[str, Any], count: int) -> dict[str, Any]:
    """Up to ``count`` evenly spaced rows of a contract batch (a cheap, deterministic subset
    that spans every chunk step of a rollout, not only its first)."""
    total = len(obs[TASK_KEY])
    idx = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
    out = {k: v[idx] for k, v in obs.items() if k != TASK_KEY}
    out[TASK_KEY] = [obs[TASK_KEY][int(i)] for i in idx]
    return out


# ------------------------------------------------------------------------------- loss terms
@dataclass
class KLToReference:
    """Kickstarting (Schmitt et al. 2018; ALGORITHMS.md §5): coef * E_s KL(pi_0(.|s) || pi(.|s))
    on the minibatch's states, with the :func:`forward_kl` sampled estimator."""

    coef: float
    name: str = "kl_ref"

    def __call__(self, policy: Any, ref_policy: Any, batch: MiniBatch) -> tuple[torch.Tensor, dict[str, float]]:
        kl = forward_kl(policy, ref_policy, batch.obs).mean()
        return self.coef * kl, {"kl": float(kl.detach())}


@dataclass
class L2ToInit:
    """(coef / 2) * ||theta - theta*||^2 over the trainable parameters, theta* = pi_0's weights."""

    coef: float
    name: str = "l2_init"

    def __call__(self, policy: Any, ref_policy: Any, batch: MiniBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ref = dict(ref_policy.named_parameters())
        sq = sum(((p - ref[n].detach()) ** 2).sum() for n, p in policy.named_parameters() if p.requires_grad)
        sq = torch.as_tensor(sq, dtype=torch.float32)
        return 0.5 * self.coef * sq, {"sq_dist": float(sq.detach())}


@dataclass
class RegularizerConfig:
    """Extra loss terms against the starting policy (forgetting mitigation, ALGORITHMS.md section 5)."""

    kl_ref_coef: float = 0.0
    """Kickstarting weight on KL(pi_0 || pi) over rollout states (0 disables, 0.05-0.1 in the literature)."""
    l2_init_coef: float = 0.0
    """L2-to-init weight lambda in (lambda/2) ||theta - theta0||^2 (0 disables)."""


def build_terms(cfg: RegularizerConfig) -> list[LossTerm]:
    """The loss terms a :class:`RegularizerConfig` asks for."""
    terms: list[LossTerm] = []
    if cfg.kl_ref_coef > 0:
        terms.append(KLToReference(cfg.kl_ref_coef))
    if cfg.l2_init_coef > 0:
        terms.append(L2ToInit(cfg.l2_init_coef))
    return terms


def apply_terms(terms: list[LossTerm], policy: Any, ref_policy: Any, batch: MiniBatch
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the terms' losses and their metrics under ``loss/<name>/<metric>``."""
    total = torch.zeros((), device=batch.log_probs.device)
    metrics: dict[str, float] = {}
    for term in terms:
        loss, m = term(policy, ref_policy, batch)
        total = total + loss
        metrics[f"loss/{term.name}"] = float(loss.detach())
        metrics.update({f"loss/{term.name}/{k}": v for k, v in m.items()})
    return total, metrics


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient norm became NaN/inf: the update is refused and the run stops."""


def check_finite(value: torch.Tensor, what: str, where: str, parts: dict[str, float] | None = None) -> None:
    """Raise :class:`NonFiniteLossError` (one line naming the quantity and its parts) if not finite."""
    if bool(torch.isfinite(value.detach()).all()):
        return
    detail = ", ".join(f"{k}={v:.4g}" for k, v in (parts or {}).items())
    raise NonFiniteLossError(f"{what} is {float(value.detach())} at {where}" + (f" ({detail})" if detail else "")
                             + "; stopped without writing a checkpoint")
