"""GRPO on action chunks: groups of rollouts from one initial state, no critic (ALGORITHMS.md §2-3).

G rollouts start from the same seeded initial state; each gets a verified reward R_i (binary
success in the simulator, a success head in a world model); the advantage of every chunk of
rollout i is (R_i - mean_group) / (std_group + eps), and the policy takes the shared clipped
step (:mod:`vla_rft.algorithms.pg`). Groups come from any rollout source through
:class:`~vla_rft.algorithms.rollout.ChunkCollector` with ``first_episode_only``.

**Length bias.** A plain mean over all chunks gives a long failed rollout more weight than a
short success. ``loss_agg: rollout`` (the default) weighs every rollout equally (each chunk
1 / (its rollout's length)); ``constant`` is Dr. GRPO's sum over chunks divided by a constant
(max_chunks per rollout), ``chunk`` the plain mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_rft.algorithms.pg import ClippedPG, PGBatch, PGConfig, flatten_rollout
from vla_rft.algorithms.rollout import ChunkRollout, first_episode_success
from vla_rft.errors import UserInputError

LOSS_AGGS = ("rollout", "constant", "chunk")


@dataclass
class GRPOConfig(PGConfig):
    """GRPO hyperparameters."""

    dual_clip: float | None = 3.0
    """Dual-clip bound c for negative advantages (VLA-RFT 3; None disables)."""
    minibatches: int = 1
    """Minibatches per epoch."""
    group_size: int = 8
    """G, rollouts per initial state (VLA-RFT 16)."""
    groups: int = 2
    """Initial states (groups) per iteration."""
    max_chunks: int = 8
    """Chunk steps a rollout may take before it counts as a failure (at least the task's time limit is covered)."""
    adv_eps: float = 1e-6
    """eps in (R - mean) / (std + eps)."""
    std_norm: bool = True
    """Divide by the group's std (Dr. GRPO turns this off)."""
    loss_agg: str = "rollout"
    """How chunk losses are averaged: rollout (each rollout weighs the same), constant (Dr. GRPO), chunk (plain mean)."""
    reward: str = "success"
    """Each rollout's verified reward, success (of its first episode) or return (its first episode's summed rewards, e.g. a world model's trajectory similarity)."""


def group_seeds(base_seed: int, iteration: int, groups: int, group_size: int) -> list[int]:
    """Reset seeds (N,): the G members of a group share one seed; each iteration gets new states,
    and runs with different ``base_seed`` get disjoint ones."""
    return [base_seed * 1_000_003 + iteration * groups + g for g in range(groups) for _ in range(group_size)]


def group_advantages(reward: np.ndarray, group: np.ndarray, eps: float, std_norm: bool = True) -> np.ndarray:
    """(R_i - mean_g) / (std_g + eps) per rollout (N,); std is the population std of the group."""
    adv = np.zeros_like(reward, dtype=np.float64)
    for g in np.unique(group):
        members = group == g
        r = reward[members].astype(np.float64)
        adv[members] = (r - r.mean()) / ((r.std() if std_norm else 0.0) + eps)
    return adv


def chunk_weights(valid: np.ndarray, agg: str, max_chunks: int) -> np.ndarray:
    """(T, N) loss weights of the valid chunks, scaled so that their mean is the aggregation."""
    if agg not in LOSS_AGGS:
        raise UserInputError(f"grpo.loss_agg must be one of {LOSS_AGGS}, got '{agg}'")
    total, n = valid.sum(), valid.shape[1]
    lengths = valid.sum(axis=0, keepdims=True).clip(min=1)  # (1, N) chunks of each rollout
    if agg == "rollout":
        w = total / (n * lengths)
    elif agg == "constant":
        w = np.full((1, n), total / (n * max_chunks))
    else:
        w = np.ones((1, n))
    return np.broadcast_to(w, valid.shape) * valid


class GRPO(ClippedPG):
    """Clipped policy gradient with group-normalized verified rewards and no critic."""

    name = "grpo"

    def prepare(self, rollout: ChunkRollout) -> tuple[PGBatch, dict[str, float]]:
        cfg = self.cfg
        n = rollout.shape[1]
        reward = first_episode_success(rollout, "return" if cfg.reward == "return" else "success")  # (N,)
        group = np.arange(n) // cfg.group_size
        per_rollout = group_advantages(reward, group, cfg.adv_eps, cfg.std_norm)
        adv = np.broadcast_to(per_rollout[None, :], rollout.shape)  # every chunk of rollout i
        weights = chunk_weights(rollout.valid, cfg.loss_agg, cfg.max_chunks)
        zeros = np.zeros(rollout.shape)
        batch = flatten_rollout(rollout, adv, weights, zeros, self.policy.device)
        stds = [reward[group == g].std() for g in np.unique(group)]
        return batch, {"group_reward_mean": float(reward.mean()),
                       "frac_groups_no_signal": float(np.mean([s == 0 for s in stds]))}
