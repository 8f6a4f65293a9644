"""Chunked rollouts on gymnasium vector envs, the rollout buffer, and chunk-level GAE.

One **chunk step** is one macro-action (RL4VLA, ALGORITHMS.md §2): the policy samples a latent
(B, L, h, A) at the chunk's first observation, the env executes its h actions open-loop, and
the chunk's reward is the in-chunk rewards summed with discount gamma^k. An episode that ends
inside a chunk ends the chunk for that env: its transition has ``steps`` < h env steps and
its discount to the next chunk is gamma^steps.

Envs run in lockstep, so an env whose episode ended mid-chunk must still be stepped until the
others finish their chunk. It then plays ``idle_action`` (a fixed, policy-independent action,
zeros by default) in its *new* episode, so the remaining steps only shift the initial-state
distribution and never mix one episode's chunk into the next one's transitions.

Autoreset (gymnasium 1.x vector envs):

- ``SAME_STEP`` (what :func:`make_chunk_vec_env` builds): the step that ends an episode
  returns the new episode's first observation, the last one in ``info["final_obs"]``. Every env
  starts every chunk, so the buffer is dense.
- ``NEXT_STEP`` (gymnasium's default, e.g. ``sims.make_vec_env``): the step *after* a done is a
  reset step whose action is ignored and whose reward/flags are not a transition. An env whose
  episode ended on a chunk's last step must spend the next chunk's first step resetting, so that
  chunk slot is marked invalid (``valid`` False) and excluded from GAE and losses.
- ``DISABLED`` is refused: a lockstep chunk cannot step a finished env.

Every rollout starts from seeded resets (``collect(..., seed)``): the data of an iteration is
a function of the policy's weights and the seed alone, which is what makes resumed and
distributed runs repeat exactly (no env state needs checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vla_rft.contract import TASK_KEY

Obs = dict[str, Any]


# ---------------------------------------------------------------------------------- obs helpers
def obs_batch(obs: Obs) -> Obs:
    """A vector env observation as a contract batch: arrays, the instructions as a list."""
    out: Obs = {k: np.asarray(v) for k, v in obs.items() if k != TASK_KEY}
    out[TASK_KEY] = [str(t) for t in obs[TASK_KEY]]
    return out


def obs_rows(obs: Obs, idx: np.ndarray | list[int]) -> Obs:
    """Rows ``idx`` of a contract batch."""
    idx = np.asarray(idx)
    out: Obs = {k: np.asarray(v)[idx] for k, v in obs.items() if k != TASK_KEY}
    out[TASK_KEY] = [obs[TASK_KEY][int(i)] for i in idx]
    return out


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


def _final_obs_rows(info: dict[str, Any], idx: np.ndarray) -> Obs:
    """The last observations of the episodes ``idx`` ended (SAME_STEP autoreset's final_obs).

    gymnasium stores ``final_obs`` either as a per-env object array of dicts or as a dict of
    per-key arrays, depending on the vector env; both are handled."""
    final = info["final_obs"]
    if isinstance(final, dict):
        return {k: (list(np.asarray(v)[idx]) if k == TASK_KEY else np.stack([np.asarray(v)[i] for i in idx]))
                for k, v in final.items()}
    rows = [final[int(i)] for i in idx]
    out: Obs = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0] if k != TASK_KEY}
    out[TASK_KEY] = [str(r[TASK_KEY]) for r in rows]
    return out


def _info_flag(info: dict[str, Any], key: str, n: int, final: bool) -> np.ndarray:
    """``info[key]`` (N,) bool; from ``final_info`` when the episode auto-reset on this step."""
    src = info.get("final_info", {}) if final else info
    if isinstance(src, dict) and key in src:
        return np.asarray(src[key], dtype=bool).reshape(n)
    if not isinstance(src, dict):  # an object array of per-env dicts
        return np.array([bool(d.get(key, False)) if isinstance(d, dict) else False for d in src])
    return np.zeros(n, dtype=bool)


# ---------------------------------------------------------------------------------- policy step
@dataclass
class ChunkSample:
    """What one policy query returns for a batch of N chunk-start observations."""

    latent: torch.Tensor  # (N, L, h, A) normalized
    log_prob: torch.Tensor  # (N,)
    value: torch.Tensor | None  # (N,), None when the policy has no value head or values are off
    chunk: np.ndarray  # (N, h, A) env units, clipped to [-1, 1]: what the env executes


@torch.no_grad()
def sample_chunks(policy: Any, obs: Obs, generator: torch.Generator, with_value: bool) -> ChunkSample:
    """Sample chunks (and values) in one trunk pass; the latent is what log-probs are defined on."""
    feats = policy.features(policy.prepare(obs))
    latent, logp = policy.head.sample(feats.action_tokens, generator)
    value = policy.value_net(feats.pooled).squeeze(-1) if with_value else None
    chunk = policy.latent_to_chunk(latent).clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
    return ChunkSample(latent, logp, value, chunk)


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
    log_probs: np.ndarray  # (T, N)
    values: np.ndarray  # (T, N); zeros when collected without values
    rewards: np.ndarray  # (T, N) sum_k gamma^k r_k over the steps executed
    steps: np.ndarray  # (T, N) env steps executed (h, or fewer when the episode ended)
    terminated: np.ndarray  # (T, N) episode ended by termination (no bootstrap)
    done: np.ndarray  # (T, N) episode ended (termination or truncation)
    next_values: np.ndarray  # (T, N)
    valid: np.ndarray  # (T, N) False for NEXT_STEP reset slots
    episodes: list[dict[str, Any]] = field(default_factory=list)  # finished episodes' stats
    env_steps: int = 0  # env steps taken by the vector env (idle steps included)

    @property
    def shape(self) -> tuple[int, int]:
        return self.log_probs.shape  # type: ignore[return-value]

    @staticmethod
    def concat(parts: list[ChunkRollout]) -> ChunkRollout:
        """Join rollouts of different workers along the env axis (same T)."""
        if len(parts) == 1:
            return parts[0]
        obs = {k: np.concatenate([p.obs[k] for p in parts], axis=1) for k in parts[0].obs}

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts], axis=1)

        return ChunkRollout(
            obs=obs, latents=torch.cat([p.latents for p in parts], dim=1), log_probs=cat("log_probs"),
            values=cat("values"), rewards=cat("rewards"), steps=cat("steps"), terminated=cat("terminated"),
            done=cat("done"), next_values=cat("next_values"), valid=cat("valid"),
            episodes=[e for p in parts for e in p.episodes], env_steps=sum(p.env_steps for p in parts))


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
def autoreset_mode(env: Any) -> str:
    """'same_step' or 'next_step' (the modes a lockstep chunk collector can use)."""
    mode = getattr(env, "metadata", {}).get("autoreset_mode", "next_step")
    name = str(getattr(mode, "name", mode)).lower()  # AutoresetMode.SAME_STEP -> "same_step"
    if name not in ("same_step", "next_step"):
        raise ValueError(f"vector env autoreset mode '{name}' cannot run lockstep chunks; use same_step "
                         "(make_chunk_vec_env builds it) or next_step")
    return name


def _enable_lazy_frames(env: Any) -> bool:
    """Switch every env of ``env`` to lazy frames; False if they do not support it."""
    try:
        env.call("set_lazy_frames", True)
    except AttributeError:
        return False
    return True


@dataclass
class _EpisodeTrack:
    """Running return/length/success of each env's current episode."""

    n: int
    ret: np.ndarray = field(init=False)
    length: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ret = np.zeros(self.n)
        self.length = np.zeros(self.n, dtype=np.int64)


class ChunkCollector:
    """Collects :class:`ChunkRollout` s from a vector env (one per :meth:`collect` call).

    Args:
        env: a gymnasium vector env with SAME_STEP or NEXT_STEP autoreset.
        gamma: the per-env-step discount used inside chunks.
        idle_action: the action played by an env waiting for the others to finish a chunk.
        lazy_frames: where the envs support it (``sims.SimEnv.set_lazy_frames``), render
            cameras only on the steps whose observations are read: each chunk's last step (the
            next chunk's start), resets, and episode ends. The rollout is the same; a chunk of
            h steps renders about 1/h of the frames.
    """

    def __init__(self, env: Any, gamma: float, idle_action: np.ndarray | None = None, lazy_frames: bool = True) -> None:
        self.env = env
        self.gamma = float(gamma)
        self.mode = autoreset_mode(env)
        self.num_envs = int(env.num_envs)
        act_dim = int(np.prod(env.single_action_space.shape))
        self.idle_action = np.zeros(act_dim, np.float32) if idle_action is None else np.asarray(idle_action, np.float32)
        self.lazy_frames = _enable_lazy_frames(env) if lazy_frames else False

    def collect(self, policy: Any, num_chunks: int, seeds: list[int], sample_seed: int,
                with_values: bool = True, first_episode_only: bool = False) -> ChunkRollout:
        """Reset every env with ``seeds`` (N,) and run ``num_chunks`` chunk steps.

        ``first_episode_only`` (GRPO): each env contributes its first episode only; slots after
        it are invalid, and collection stops early once every env has finished one."""
        n, h = self.num_envs, int(policy.spec.chunk_size)
        gen = torch.Generator(device=policy.device).manual_seed(int(sample_seed))
        obs, _ = self.env.reset(seed=list(seeds))
        obs = obs_batch(obs)
        track = _EpisodeTrack(n)
        needs_reset = np.zeros(n, dtype=bool)  # NEXT_STEP: the env's next step is a reset step
        shape = (num_chunks, n)
        rewards, steps = np.zeros(shape), np.zeros(shape, dtype=np.int64)
        terminated, done, valid = (np.zeros(shape, dtype=bool) for _ in range(3))
        next_values, values, logps = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        starts: list[Obs] = []
        latents: list[torch.Tensor] = []
        episodes: list[dict[str, Any]] = []
        env_steps = 0
        finished = np.zeros(n, dtype=bool)  # first_episode_only: the env has ended an episode
        used = num_chunks
        for t in range(num_chunks):
            if first_episode_only and finished.all():
                used = t
                break
            valid[t] = ~needs_reset & ~(finished & first_episode_only)
            sample = sample_chunks(policy, obs, gen, with_values)
            starts.append(obs)
            latents.append(sample.latent.cpu())
            logps[t] = sample.log_prob.cpu().numpy()
            if sample.value is not None:
                values[t] = sample.value.cpu().numpy()
            active = valid[t].copy()
            truncated_final: dict[int, Obs] = {}
            for k in range(h):
                if self.lazy_frames and k == h - 1:
                    self.env.call("request_frames")
                actions = np.where(active[:, None], sample.chunk[:, k], self.idle_action[None, :])
                raw_obs, r, term, trunc, info = self.env.step(actions)
                env_steps += n
                r, term, trunc = np.asarray(r, np.float64), np.asarray(term, bool), np.asarray(trunc, bool)
                reset_step = needs_reset.copy()
                needs_reset &= ~reset_step
                rewards[t, active] += self.gamma ** k * r[active]
                steps[t, active] += 1
                track.ret[active] += r[active]
                track.length[active] += 1
                ended = active & (term | trunc)
                if ended.any():
                    self._finish(t, ended, term, trunc, info, raw_obs, track, episodes, terminated, done,
                                 truncated_final)
                    finished |= ended
                active &= ~ended
                if self.mode == "next_step":
                    needs_reset |= (term | trunc) & ~reset_step
                obs = obs_batch(raw_obs)
            self._bootstrap_truncated(policy, t, truncated_final, next_values, with_values)
        last_values = values_of(policy, obs) if with_values else np.zeros(n)
        for t in range(used):  # a transition that did not end leads to the next chunk's start
            following = values[t + 1] if t + 1 < used else last_values
            next_values[t] = np.where(done[t], next_values[t], following)
        cut = slice(0, used)
        return ChunkRollout(obs=stack_obs(starts), latents=torch.stack(latents), log_probs=logps[cut],
                            values=values[cut], rewards=rewards[cut], steps=steps[cut], terminated=terminated[cut],
                            done=done[cut], next_values=next_values[cut], valid=valid[cut], episodes=episodes,
                            env_steps=env_steps)

    def _finish(self, t: int, ended: np.ndarray, term: np.ndarray, trunc: np.ndarray, info: dict[str, Any],
                raw_obs: Obs, track: _EpisodeTrack, episodes: list[dict[str, Any]], terminated: np.ndarray,
                done: np.ndarray, truncated_final: dict[int, Obs]) -> None:
        """Close the transitions and episodes of the envs in ``ended``."""
        n = self.num_envs
        same = self.mode == "same_step"
        success = _info_flag(info, "is_success", n, final=same)
        idx = np.flatnonzero(ended)
        terminated[t, idx] = term[idx]
        done[t, idx] = True
        last_obs = _final_obs_rows(info, idx) if same else obs_rows(obs_batch(raw_obs), idx)
        for j, i in enumerate(idx):
            episodes.append({"env": int(i), "chunk": t, "return": float(track.ret[i]),
                             "length": int(track.length[i]), "success": bool(success[i])})
            if trunc[i] and not term[i]:
                truncated_final[int(i)] = obs_rows(last_obs, [j])
        track.ret[idx] = 0.0
        track.length[idx] = 0

    @staticmethod
    def _bootstrap_truncated(policy: Any, t: int, finals: dict[int, Obs], next_values: np.ndarray,
                             with_values: bool) -> None:
        """V of the last observation of each episode truncated in chunk ``t`` (one batch)."""
        if not finals or not with_values:
            return
        envs = sorted(finals)
        batch = {k: np.concatenate([finals[i][k] for i in envs]) for k in finals[envs[0]] if k != TASK_KEY}
        batch[TASK_KEY] = [finals[i][TASK_KEY][0] for i in envs]
        next_values[t, envs] = values_of(policy, batch)

