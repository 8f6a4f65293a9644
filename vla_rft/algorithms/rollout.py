"""Chunked rollouts from a rollout source, the rollout buffer, and chunk-level GAE.

One **chunk step** is one macro-action (RL4VLA, ALGORITHMS.md §2): the policy samples a latent
(B, L, h, A) at the chunk's first observation and the source executes its h actions open-loop
(:mod:`vla_rft.sources`). An episode that ends inside a chunk ends the chunk for that env: the
rest of the chunk is never executed (no filler action reaches the next episode), its
transition has ``steps`` < h env steps, its discount to the next chunk is gamma^steps, and
its log-probability and entropy cover the executed steps only (``executed`` masks them).

Every rollout starts from seeded resets (``collect(..., seeds)``): the data of an iteration is
a function of the policy's weights and the seeds alone, which is what makes resumed and
distributed runs repeat exactly (no env state needs checkpointing). The same collector serves
PPO (fixed-length rollouts) and GRPO (each env's first episode, ``first_episode_only``), for
every source: the path the tests exercise is the production path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vla_rft.contract import TASK_KEY

Obs = dict[str, Any]


# ---------------------------------------------------------------------------------- obs helpers
def stack_obs(seq: list[Obs]) -> Obs:
    """T contract batches of N rows -> arrays (T, N, ...) and instructions (T, N) object array."""
    out: Obs = {k: np.stack([o[k] for o in seq]) for k in seq[0] if k != TASK_KEY}
    out[TASK_KEY] = np.array([list(o[TASK_KEY]) for o in seq], dtype=object)
    return out


def flat_obs(obs: Obs, idx: np.ndarray) -> Obs:
    """Rows ``idx`` of a (T, N, ...) stacked observation flattened to (T * N, ...)."""
    out: Obs = {}
    for k, v in obs.items():
        flat = v.reshape(-1, *v.shape[2:])
        out[k] = [str(t) for t in flat[idx]] if k == TASK_KEY else flat[idx]
    return out


def cat_obs(parts: list[Obs]) -> Obs:
    """Contract batches joined along the batch axis."""
    out: Obs = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0] if k != TASK_KEY}
    out[TASK_KEY] = [str(t) for p in parts for t in p[TASK_KEY]]
    return out


# ---------------------------------------------------------------------------------- policy step
@dataclass
class ChunkSample:
    """What one policy query returns for a batch of N chunk-start observations."""

    latent: torch.Tensor  # (N, L, h, A) normalized
    step_log_prob: torch.Tensor  # (N, h)
    value: torch.Tensor | None  # (N,), None when the policy has no value head or values are off
    chunk: np.ndarray  # (N, h, A) env units, clipped to [-1, 1]: what the env executes


@torch.no_grad()
def sample_chunks(policy: Any, obs: Obs, generator: torch.Generator, with_value: bool) -> ChunkSample:
    """Sample chunks, their per-step log-probs (the densities ``step_log_prob`` gives, so the first
    update's ratio is 1; tested) and values in one trunk pass."""
    feats = policy.features(policy.prepare(obs))
    latent, step_logp = policy.head.sample(feats.action_tokens, generator)
    value = policy.value_net(feats.pooled).squeeze(-1) if with_value else None
    chunk = policy.latent_to_chunk(latent).clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
    return ChunkSample(latent, step_logp, value, chunk)


@torch.no_grad()
def values_of(policy: Any, obs: Obs) -> np.ndarray:
    """V(o) (N,) as numpy."""
    return policy.value(obs).cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------------------------- buffer
@dataclass
class ChunkRollout:
    """T chunk steps of N envs (every array is (T, N, ...)); the learner's plain-data batch.

    ``next_values`` holds V of the observation each transition leads to: the next chunk's
    start, the episode's last observation when it was truncated (time limit: bootstrap), or
    the rollout's last observation. GAE never reads V across a termination.
    """

    obs: Obs  # key -> (T, N, ...); TASK_KEY -> (T, N) object
    latents: torch.Tensor  # (T, N, L, h, A)
    log_probs: np.ndarray  # (T, N, h) per-step log pi_old of the sampled latent
    executed: np.ndarray  # (T, N, h) the steps the env executed (False after the episode ended)
    step_rewards: np.ndarray  # (T, N, h) per-step rewards (0 where not executed)
    values: np.ndarray  # (T, N); zeros when collected without values
    rewards: np.ndarray  # (T, N) sum_k gamma^k r_k over the steps executed
    steps: np.ndarray  # (T, N) env steps executed (h, or fewer when the episode ended)
    terminated: np.ndarray  # (T, N) episode ended by termination (no bootstrap)
    done: np.ndarray  # (T, N) episode ended (termination or truncation)
    next_values: np.ndarray  # (T, N)
    valid: np.ndarray  # (T, N) False for slots after an env's first episode (GRPO)
    episodes: list[dict[str, Any]] = field(default_factory=list)  # finished episodes' stats
    env_steps: int = 0  # env steps executed

    @property
    def shape(self) -> tuple[int, int]:
        return self.rewards.shape  # type: ignore[return-value]


def chunk_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, steps: np.ndarray,
              terminated: np.ndarray, done: np.ndarray, valid: np.ndarray, gamma: float,
              lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE over chunk steps; every input is (T, N). Returns (advantages, returns), (T, N).

    delta_t = R_t + gamma^{n_t} * (1 - term_t) * V(s'_t) - V(s_t), with n_t the env steps the
    chunk executed (h unless the episode ended inside it), and
    A_t = delta_t + gamma^{n_t} * lambda * (1 - done_t) * A_{t+1}. Truncation stops the
    recursion but still bootstraps from V(s'_t) (the episode's last observation); termination
    bootstraps nothing. Invalid slots get A = 0 and are excluded from the losses.
    """
    T = rewards.shape[0]
    adv = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1], dtype=np.float64)
    for t in reversed(range(T)):
        disc = gamma ** steps[t].astype(np.float64)
        delta = rewards[t] + disc * (1.0 - terminated[t]) * next_values[t] - values[t]
        running = delta + disc * lam * (1.0 - done[t]) * running
        running = np.where(valid[t], running, 0.0)
        adv[t] = running
    return adv, adv + values


# ---------------------------------------------------------------------------------- collector
class ChunkCollector:
    """Collects :class:`ChunkRollout` s from a rollout source (one per :meth:`collect` call).

    Args:
        source: a :class:`~vla_rft.sources.RolloutSource` (sim vector env, Ray, fake, world model).
        gamma: the per-env-step discount used inside chunks.
    """

    def __init__(self, source: Any, gamma: float) -> None:
        self.source = source
        self.gamma = float(gamma)
        self.num_envs = int(source.num_envs)

    def collect(self, policy: Any, num_chunks: int, seeds: Sequence[int], sample_seed: int,
                with_values: bool = True, first_episode_only: bool = False) -> ChunkRollout:
        """Reset every env with ``seeds`` (N,) and run ``num_chunks`` chunk steps.

        ``first_episode_only`` (GRPO): each env contributes its first episode only; slots after
        it are invalid, and collection stops early once every env has finished one."""
        n, h = self.num_envs, int(policy.spec.chunk_size)
        if h != int(self.source.chunk_size):
            raise ValueError(f"the policy emits chunks of {h} actions, the source executes {self.source.chunk_size}")
        gen = torch.Generator(device=policy.device).manual_seed(int(sample_seed))
        obs = self.source.reset(list(seeds))
        shape = (num_chunks, n)
        disc = self.gamma ** np.arange(h)
        rewards, steps = np.zeros(shape), np.zeros(shape, dtype=np.int64)
        terminated, done, valid = (np.zeros(shape, dtype=bool) for _ in range(3))
        next_values, values = np.zeros(shape), np.zeros(shape)
        logps, step_rewards = np.zeros((*shape, h)), np.zeros((*shape, h))
        executed = np.zeros((*shape, h), dtype=bool)
        starts: list[Obs] = []
        latents: list[torch.Tensor] = []
        episodes: list[dict[str, Any]] = []
        ep_ret, ep_len = np.zeros(n), np.zeros(n, dtype=np.int64)
        finished = np.zeros(n, dtype=bool)  # first_episode_only: the env has ended an episode
        env_steps, used = 0, num_chunks
        for t in range(num_chunks):
            if first_episode_only and finished.all():
                used = t
                break
            valid[t] = ~(finished & first_episode_only)
            sample = sample_chunks(policy, obs, gen, with_values)
            starts.append(obs)
            latents.append(sample.latent.cpu())
            logps[t] = sample.step_log_prob.cpu().numpy()
            if sample.value is not None:
                values[t] = sample.value.cpu().numpy()
            out = self.source.step(sample.chunk)
            step_rewards[t], executed[t] = out.rewards, out.executed
            rewards[t] = (out.rewards * out.executed * disc).sum(axis=1)
            steps[t] = out.executed.sum(axis=1)
            env_steps += int(steps[t].sum())
            ep_ret += out.rewards.sum(axis=1)
            ep_len += steps[t]
            ended = out.done
            terminated[t], done[t] = out.terminated, ended
            for i in np.flatnonzero(ended & valid[t]):
                episodes.append({"env": int(i), "chunk": t, "return": float(ep_ret[i]), "length": int(ep_len[i]),
                                 "success": bool(out.success[i])})
            ep_ret[ended], ep_len[ended] = 0.0, 0
            finished |= ended
            truncated = np.flatnonzero(out.truncated & ~out.terminated)
            if len(truncated) and with_values:  # bootstrap from the truncated episodes' last observations
                next_values[t, truncated] = values_of(policy, cat_obs([out.final_obs[int(i)] for i in truncated]))
            obs = out.obs
        last_values = values_of(policy, obs) if with_values else np.zeros(n)
        for t in range(used):  # a transition that did not end leads to the next chunk's start
            following = values[t + 1] if t + 1 < used else last_values
            next_values[t] = np.where(done[t], next_values[t], following)
        cut = slice(0, used)
        return ChunkRollout(obs=stack_obs(starts), latents=torch.stack(latents), log_probs=logps[cut],
                            executed=executed[cut], step_rewards=step_rewards[cut], values=values[cut],
                            rewards=rewards[cut], steps=steps[cut], terminated=terminated[cut], done=done[cut],
                            next_values=next_values[cut], valid=valid[cut], episodes=episodes, env_steps=env_steps)


def first_episode_success(rollout: ChunkRollout, key: str = "success") -> np.ndarray:
    """(N,) 1.0 where the env's first episode succeeded (0 if it never ended); with ``key="return"``
    the first episode's return instead."""
    reward = np.zeros(rollout.shape[1])
    seen = np.zeros(rollout.shape[1], dtype=bool)
    for ep in rollout.episodes:
        if not seen[ep["env"]]:
            reward[ep["env"]] = float(ep[key])
            seen[ep["env"]] = True
    return reward
