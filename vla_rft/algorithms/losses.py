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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from vla_rft.contract import TASK_KEY


class LossTerm(Protocol):
    """An extra loss added to a training loss: ``term(policy, ref_policy, batch) -> (loss, metrics)``.

    ``batch`` is the minibatch the algorithm's loss is computed on (PPO/GRPO's
    :class:`~vla_rft.algorithms.pg.PGBatch`, BC's chunk windows); terms read ``batch.obs`` (a
    contract batch). A **stateful** term (running statistics, its own RNG, a Fisher estimate)
    also defines ``state_dict() -> dict[str, Tensor]`` and ``load_state_dict(state)``; the
    trainer saves that state in every checkpoint and restores it on resume."""

    name: str

    def __call__(self, policy: Any, ref_policy: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        ...


# ------------------------------------------------------------------------------- building blocks
def clipped_value_loss(value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float | None,
                       huber_delta: float) -> torch.Tensor:
    """RL4VLA's value loss: max(Huber(V - G), Huber(V_clipped - G)), V_clipped within +-clip of
    V_old; ``clip`` None is the plain Huber loss."""
    if clip is None:
        return F.huber_loss(value, returns, delta=huber_delta)
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

    def __call__(self, policy: Any, ref_policy: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        kl = forward_kl(policy, ref_policy, batch.obs).mean()
        return self.coef * kl, {"kl": float(kl.detach())}


@dataclass
class L2ToInit:
    """(coef / 2) * ||theta - theta*||^2 over the trainable actor parameters (not the value
    MLP, which a critic must move freely), theta* = pi_0's weights."""

    coef: float
    name: str = "l2_init"

    def __call__(self, policy: Any, ref_policy: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        ref = dict(ref_policy.named_parameters())
        value = {id(p) for p in policy.parameter_groups().get("value", [])} if hasattr(policy, "parameter_groups") else set()
        sq = sum(((p - ref[n].detach()) ** 2).sum() for n, p in policy.named_parameters()
                 if p.requires_grad and n in ref and id(p) not in value)  # the actor only; LoRA adapters have no pi_0 counterpart
        sq = torch.as_tensor(sq, dtype=torch.float32)
        return 0.5 * self.coef * sq, {"sq_dist": float(sq.detach())}


_TERMS: dict[str, Callable[[float], LossTerm]] = {"kl_ref": KLToReference, "l2_init": L2ToInit}


def register_term(name: str) -> Callable[[Callable[[float], LossTerm]], Callable[[float], LossTerm]]:
    """Decorator: ``cls(coef)`` becomes the loss term ``name``, chosen in config as
    ``--regularizers.terms '{name: coef}'`` (:class:`~vla_rft.algorithms.forgetting.ForgettingConfig`)."""

    def deco(cls: Callable[[float], LossTerm]) -> Callable[[float], LossTerm]:
        _TERMS[name] = cls
        return cls

    return deco


def registered_term(name: str, coef: float) -> LossTerm:
    """The registered term ``name`` with coefficient ``coef`` (one clear error for an unknown name)."""
    from vla_rft.config import ConfigError

    if name not in _TERMS:
        raise ConfigError(f"unknown loss term '{name}' in regularizers.terms; registered: {', '.join(sorted(_TERMS))}")
    return _TERMS[name](coef)


def apply_terms(terms: list[LossTerm], policy: Any, ref_policy: Any, batch: Any
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the terms' losses and their metrics under ``loss/<name>/<metric>``."""
    total = torch.zeros((), device=policy.device)
    metrics: dict[str, float] = {}
    for term in terms:
        if not callable(term):  # a hook (LoRA, EMA, ...), not a loss
            continue
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
