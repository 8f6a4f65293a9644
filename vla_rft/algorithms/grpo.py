"""GRPO on action chunks: groups of rollouts from one initial state, no critic (ALGORITHMS.md §2-3).

G rollouts start from the same seeded initial state; each gets a verified reward R_i (binary
success in the simulator); the advantage of every chunk of rollout i is
(R_i - mean_group) / (std_group + eps), and the policy takes PPO's clipped step on the chunk
log-probs. The loss reads top to bottom in :func:`grpo_loss`.

Where groups come from is an interface, :class:`GroupRolloutProvider`: :class:`SimGroupProvider`
resets G simulator envs with the same seed; a world model provides imagined groups the same way
(a :class:`GroupRollout` whose rewards it verifies itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from vla_rft.algorithms.losses import (
    LossTerm,
    MiniBatch,
    apply_terms,
    check_finite,
    clipped_policy_loss,
    forward_kl,
    subsample_obs,
)
from vla_rft.algorithms.optim import (
    RLOptimConfig,
    clip_and_norm,
    lr_factor,
    make_rl_optimizer,
    set_lr_factor,
)
from vla_rft.algorithms.rollout import ChunkCollector, ChunkRollout, flat_obs


@dataclass
class GRPOConfig:
    """GRPO hyperparameters."""

    group_size: int = 8
    """G, rollouts per initial state (VLA-RFT 16)."""
    groups: int = 2
    """Initial states (groups) per iteration."""
    max_chunks: int = 8
    """Chunk steps a rollout may take before it counts as a failure (cover the task's time limit)."""
    clip: float = 0.2
    """Ratio clip epsilon."""
    dual_clip: float | None = 3.0
    """Dual-clip bound c for negative advantages (VLA-RFT 3; None disables)."""
    ent_coef: float = 0.0
    """Entropy bonus weight (VLA-RFT 0.003)."""
    epochs: int = 1
    """Passes over each batch of groups."""
    minibatches: int = 1
    """Minibatches per epoch."""
    adv_eps: float = 1e-6
    """eps in (R - mean) / (std + eps)."""
    kl_samples: int = 64
    """States of each batch used for the logged KL to the starting policy."""


@dataclass
class GroupRollout:
    """A batch of groups: the chunk transitions plus one verified reward per rollout.

    ``rollout`` has N = groups * G envs (group g is envs g*G .. g*G+G-1); its ``valid`` marks
    the chunks of each env's first episode."""

    rollout: ChunkRollout
    group: np.ndarray  # (N,) group index of each env
    reward: np.ndarray  # (N,) R_i, e.g. 1.0 for success


class GroupRolloutProvider(Protocol):
    """Anything that produces groups for GRPO: the simulator, or an imagined env."""

    def collect_groups(self, policy: Any, iteration: int) -> GroupRollout:
        ...


def group_seeds(base_seed: int, iteration: int, groups: int, group_size: int) -> list[int]:
    """Reset seeds (N,): the G members of a group share one seed; each iteration gets new states."""
    return [base_seed + iteration * groups + g for g in range(groups) for _ in range(group_size)]


class SimGroupProvider:
    """Groups from a vector env of ``groups * group_size`` envs reset with shared seeds."""

    def __init__(self, env: Any, cfg: GRPOConfig, seed: int, gamma: float = 1.0) -> None:
        if env.num_envs != cfg.groups * cfg.group_size:
            raise ValueError(f"the vector env has {env.num_envs} envs; GRPO needs groups x group_size = "
                             f"{cfg.groups} x {cfg.group_size}")
        self.collector = ChunkCollector(env, gamma)
        self.cfg, self.seed = cfg, seed

    def collect_groups(self, policy: Any, iteration: int) -> GroupRollout:
        cfg = self.cfg
        seeds = group_seeds(self.seed, iteration, cfg.groups, cfg.group_size)
        rollout = self.collector.collect(policy, cfg.max_chunks, seeds, sample_seed=self.seed * 1_000_003 + iteration,
                                         with_values=False, first_episode_only=True)
        return GroupRollout(rollout, np.repeat(np.arange(cfg.groups), cfg.group_size),
                            first_episode_success(rollout))


def first_episode_success(rollout: ChunkRollout) -> np.ndarray:
    """(N,) 1.0 where the env's first episode succeeded (0 if it never ended)."""
    n = rollout.shape[1]
    reward = np.zeros(n)
    seen = np.zeros(n, dtype=bool)
    for ep in rollout.episodes:
        if not seen[ep["env"]]:
            reward[ep["env"]] = float(ep["success"])
            seen[ep["env"]] = True
    return reward


def group_advantages(reward: np.ndarray, group: np.ndarray, eps: float) -> np.ndarray:
    """(R_i - mean_g) / (std_g + eps) per rollout (N,); std is the population std of the group."""
    adv = np.zeros_like(reward, dtype=np.float64)
    for g in np.unique(group):
        members = group == g
        r = reward[members].astype(np.float64)
        adv[members] = (r - r.mean()) / (r.std() + eps)
    return adv


def grpo_loss(policy: Any, batch: MiniBatch, cfg: GRPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss of one minibatch: clipped surrogate on chunk log-probs minus the entropy bonus."""
    ev = policy.evaluate(batch.obs, batch.latents)  # log_prob (M,), entropy (M,)
    pg_loss, metrics = clipped_policy_loss(ev.log_prob, batch.log_probs, batch.advantages, cfg.clip, cfg.dual_clip)
    entropy = ev.entropy.mean()
    loss = pg_loss - cfg.ent_coef * entropy
    return loss, {"loss/policy": float(pg_loss.detach()), "entropy": float(entropy.detach()), **metrics}


class GRPO:
    """The GRPO learner: ``update(groups, iteration, rng) -> metrics`` (no critic)."""

    def __init__(self, policy: Any, ref_policy: Any, cfg: GRPOConfig, optim: RLOptimConfig, total_iters: int,
                 terms: list[LossTerm] | None = None) -> None:
        self.policy, self.ref_policy, self.cfg, self.optim_cfg = policy, ref_policy, cfg, optim
        self.total_iters = total_iters
        self.terms = list(terms or [])
        self.optimizer = make_rl_optimizer(policy, optim)

    def update(self, groups: GroupRollout, iteration: int, rng: np.random.Generator) -> dict[str, float]:
        cfg, dev, ro = self.cfg, self.policy.device, groups.rollout
        per_env = group_advantages(groups.reward, groups.group, cfg.adv_eps)  # (N,)
        adv = np.broadcast_to(per_env[None, :], ro.shape)  # (T, N): every chunk of rollout i
        idx = np.flatnonzero(ro.valid.reshape(-1))
        obs = flat_obs(ro.obs, idx)
        latents = ro.latents.reshape(-1, *ro.latents.shape[2:])[idx].to(dev)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a).reshape(-1)[idx], dtype=torch.float32, device=dev)
        advantages, old_logp = t(adv), t(ro.log_probs)
        zeros = torch.zeros_like(old_logp)
        lrs = set_lr_factor(self.optimizer, lr_factor(iteration, self.total_iters, self.optim_cfg))
        sums: dict[str, float] = {}
        n_mb = 0
        for epoch in range(cfg.epochs):
            for mb, sel in enumerate(np.array_split(rng.permutation(len(idx)), cfg.minibatches)):
                if len(sel) == 0:
                    continue
                sel_t = torch.as_tensor(sel, device=dev)
                batch = MiniBatch({k: (v[sel] if not isinstance(v, list) else [v[i] for i in sel]) for k, v in obs.items()},
                                  latents[sel_t], old_logp[sel_t], advantages[sel_t], zeros[sel_t], zeros[sel_t])
                metrics = self._step(batch, f"iteration {iteration}, epoch {epoch}, minibatch {mb}")
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_mb += 1
        out = {k: v / max(n_mb, 1) for k, v in sums.items()}
        out.update(lrs)
        stds = [groups.reward[groups.group == g].std() for g in np.unique(groups.group)]
        out["group_reward_mean"] = float(groups.reward.mean())
        out["frac_groups_no_signal"] = float(np.mean([s == 0 for s in stds]))
        out["kl_to_start"] = self.kl_to_start(obs, seed=iteration)
        return out

    def _step(self, batch: MiniBatch, where: str) -> dict[str, float]:
        loss, metrics = grpo_loss(self.policy, batch, self.cfg)
        if self.terms:
            extra, extra_metrics = apply_terms(self.terms, self.policy, self.ref_policy, batch)
            loss = loss + extra
            metrics.update(extra_metrics)
        check_finite(loss, "the GRPO loss", where, metrics)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_and_norm(list(self.policy.parameters()), self.optim_cfg.grad_clip)
        check_finite(grad_norm, "the gradient norm", where)
        self.optimizer.step()
        metrics["loss/total"] = float(loss.detach())
        metrics["grad_norm"] = float(grad_norm)
        return metrics

    @torch.no_grad()
    def kl_to_start(self, obs: dict[str, Any], seed: int) -> float:
        """KL(pi_0 || pi) on up to ``kl_samples`` of the batch's states."""
        gen = torch.Generator(device=self.policy.device).manual_seed(10_007 * (seed + 1))
        return float(forward_kl(self.policy, self.ref_policy, subsample_obs(obs, self.cfg.kl_samples), gen).mean())
