"""The rollout worker, the runtime interface, and the in-process runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vla_rft.algorithms.grpo import GroupRollout, first_episode_success, group_seeds
from vla_rft.algorithms.rollout import ChunkCollector, ChunkRollout


@dataclass
class EnvSpec:
    """How a worker builds its vector env (plain data, so it can be shipped to a Ray actor)."""

    task: str
    num_envs: int
    vectorization: str = "sync"
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # SimEnv kwargs


def iteration_seeds(base_seed: int, iteration: int, num_envs: int, offset: int, count: int) -> list[int]:
    """Reset seeds of envs ``offset .. offset+count`` of ``num_envs`` at ``iteration``."""
    return [base_seed * 1_000_003 + iteration * num_envs + offset + i for i in range(count)]


def sample_seed(base_seed: int, iteration: int, worker: int) -> int:
    """The chunk-sampling seed of ``worker`` at ``iteration``."""
    return (base_seed * 7_919 + iteration) * 1_009 + worker


class RolloutWorker:
    """A vector env plus a policy; collects PPO rollouts or GRPO groups for one env slice.

    Args:
        spec: the env this worker builds.
        policy: the policy it samples from (the learner's own object in-process, a copy on Ray).
        gamma: per-step discount inside chunks.
        worker: index of this worker; ``offset`` the index of its first env in the whole batch.
        env: an already built vector env (tests; the world model's imagined env) instead of ``spec``.
    """

    def __init__(self, spec: EnvSpec | None, policy: Any, gamma: float, worker: int = 0, offset: int = 0,
                 env: Any = None) -> None:
        if env is None:
            from vla_rft.algorithms.envs import make_chunk_vec_env

            assert spec is not None
            env = make_chunk_vec_env(spec.task, spec.num_envs, spec.vectorization, **spec.env_kwargs)
        self.env, self.policy, self.worker, self.offset = env, policy, worker, offset
        self.collector = ChunkCollector(env, gamma)

    def set_weights(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state)

    def collect_chunks(self, num_chunks: int, total_envs: int, seed: int, iteration: int) -> ChunkRollout:
        seeds = iteration_seeds(seed, iteration, total_envs, self.offset, self.env.num_envs)
        return self.collector.collect(self.policy, num_chunks, seeds, sample_seed(seed, iteration, self.worker))

    def collect_groups(self, num_chunks: int, groups: int, group_size: int, seed: int, iteration: int
                       ) -> tuple[ChunkRollout, np.ndarray]:
        seeds = group_seeds(seed, iteration, groups, group_size)[self.offset:self.offset + self.env.num_envs]
        ro = self.collector.collect(self.policy, num_chunks, seeds, sample_seed(seed, iteration, self.worker),
                                    with_values=False, first_episode_only=True)
        return ro, first_episode_success(ro)

    def close(self) -> None:
        self.env.close()


class RolloutRuntime(Protocol):
    """What a trainer needs from a runtime."""

    def collect_chunks(self, policy: Any, iteration: int) -> ChunkRollout: ...

    def collect_groups(self, policy: Any, iteration: int) -> GroupRollout: ...

    def close(self) -> None: ...


@dataclass
class RolloutPlan:
    """What every iteration collects (the same for every runtime)."""

    num_chunks: int
    seed: int
    groups: int = 0
    group_size: int = 0


def _pad_concat(parts: list[ChunkRollout]) -> ChunkRollout:
    """Concatenate worker rollouts of possibly different lengths T (GRPO stops early): shorter
    ones are padded with invalid slots."""
    T = max(p.shape[0] for p in parts)
    padded = []
    for p in parts:
        extra = T - p.shape[0]
        if extra == 0:
            padded.append(p)
            continue
        import torch

        def pad(a: np.ndarray, fill: Any = 0, extra: int = extra) -> np.ndarray:
            return np.concatenate([a, np.full((extra, *a.shape[1:]), fill, dtype=a.dtype)])

        padded.append(ChunkRollout(
            obs={k: pad(v, "" if v.dtype == object else 0) for k, v in p.obs.items()},
            latents=torch.cat([p.latents, p.latents[-1:].expand(extra, *p.latents.shape[1:])]),
            log_probs=pad(p.log_probs), values=pad(p.values), rewards=pad(p.rewards), steps=pad(p.steps),
            terminated=pad(p.terminated), done=pad(p.done), next_values=pad(p.next_values),
            valid=pad(p.valid, False), episodes=p.episodes, env_steps=p.env_steps))
    return ChunkRollout.concat(padded)


def _offset_episodes(parts: list[ChunkRollout], sizes: list[int]) -> None:
    """Make each worker's episode ``env`` indices global."""
    offset = 0
    for p, n in zip(parts, sizes):
        for ep in p.episodes:
            ep["env"] += offset
        offset += n


class LocalRuntime:
    """One worker in the learner's process, sampling from the learner's policy itself."""

    def __init__(self, spec: EnvSpec | None, policy: Any, gamma: float, plan: RolloutPlan, env: Any = None) -> None:
        self.worker = RolloutWorker(spec, policy, gamma, env=env)
        self.plan = plan
        self.num_envs = self.worker.env.num_envs

    def collect_chunks(self, policy: Any, iteration: int) -> ChunkRollout:
        self.worker.policy = policy
        return self.worker.collect_chunks(self.plan.num_chunks, self.num_envs, self.plan.seed, iteration)

    def collect_groups(self, policy: Any, iteration: int) -> GroupRollout:
        self.worker.policy = policy
        p = self.plan
        ro, reward = self.worker.collect_groups(p.num_chunks, p.groups, p.group_size, p.seed, iteration)
        return GroupRollout(ro, np.repeat(np.arange(p.groups), p.group_size), reward)

    def close(self) -> None:
        self.worker.close()


def make_runtime(kind: str, spec: EnvSpec, policy: Any, gamma: float, plan: RolloutPlan, workers: int = 2
                 ) -> RolloutRuntime:
    """``local`` (default) or ``ray`` (``workers`` actors splitting ``spec.num_envs``)."""
    if kind == "local":
        return LocalRuntime(spec, policy, gamma, plan)
    if kind == "ray":
        from vla_rft.runtime.ray_runtime import RayRuntime

        return RayRuntime(spec, policy, gamma, plan, workers)
    raise ValueError(f"unknown runtime '{kind}'; choose 'local' or 'ray'")
