"""Rollout workers as Ray actors, one learner (the calling process).

Each actor builds its own vector env (a slice of the batch's envs) and a copy of the policy
from its checkpoint config and normalizer; every iteration the learner broadcasts its weights
(one ``ray.put``) and the actors collect in parallel. Env seeds and sampling seeds depend on
the global env index and the worker index only, so results do not depend on scheduling.
Requires the ``ray`` extra (``pip install 'vla-rft[ray]'``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_rft.algorithms.grpo import GroupRollout
from vla_rft.algorithms.rollout import ChunkRollout
from vla_rft.runtime.local import EnvSpec, RolloutPlan, RolloutWorker, _offset_episodes, _pad_concat


def _worker_policy(config: dict[str, Any], normalizer: dict[str, Any], state: dict[str, Any]) -> Any:
    """Rebuild the learner's policy inside an actor (no pickled modules cross the wire)."""
    import torch

    from vla_rft.checkpoint import Checkpoint
    from vla_rft.policies import policy_from_checkpoint

    torch.set_num_threads(1)
    ckpt = Checkpoint(kind="policy", config=config, tensors=state, normalizer=normalizer)
    return policy_from_checkpoint(ckpt, "learner policy")


class _Actor:
    """The body of a Ray actor: a :class:`RolloutWorker` with its own policy copy."""

    def __init__(self, spec: EnvSpec, config: dict[str, Any], normalizer: dict[str, Any], state: dict[str, Any],
                 gamma: float, worker: int, offset: int) -> None:
        self.worker = RolloutWorker(spec, _worker_policy(config, normalizer, state), gamma, worker, offset)

    def collect_chunks(self, state: dict[str, Any], num_chunks: int, total: int, seed: int, it: int) -> ChunkRollout:
        self.worker.set_weights(state)
        return self.worker.collect_chunks(num_chunks, total, seed, it)

    def collect_groups(self, state: dict[str, Any], num_chunks: int, groups: int, size: int, seed: int, it: int
                       ) -> tuple[ChunkRollout, np.ndarray]:
        self.worker.set_weights(state)
        return self.worker.collect_groups(num_chunks, groups, size, seed, it)

    def close(self) -> None:
        self.worker.close()


def split_envs(total: int, workers: int) -> list[int]:
    """Envs per worker (as even as possible; every worker gets at least one)."""
    if workers < 1 or workers > total:
        raise ValueError(f"ray_workers must be between 1 and the number of envs ({total}), got {workers}")
    return [total // workers + (1 if w < total % workers else 0) for w in range(workers)]


class RayRuntime:
    """``workers`` Ray actors collecting in parallel; starts a local Ray if none is running."""

    def __init__(self, spec: EnvSpec, policy: Any, gamma: float, plan: RolloutPlan, workers: int) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False)
        self.ray, self.plan, self.total = ray, plan, spec.num_envs
        if plan.group_size and any(n % plan.group_size for n in split_envs(spec.num_envs, workers)):
            raise ValueError("with runtime ray and GRPO, every worker must hold whole groups "
                             f"({spec.num_envs} envs over {workers} workers, groups of {plan.group_size})")
        self.sizes = split_envs(spec.num_envs, workers)
        actor_cls = ray.remote(num_cpus=1)(_Actor)
        state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        offsets = np.cumsum([0] + self.sizes[:-1])
        self.actors = [actor_cls.remote(EnvSpec(spec.task, n, spec.vectorization, spec.env_kwargs),
                                        policy.checkpoint_config(), policy.normalizer.to_dict(), state, gamma, w,
                                        int(off))
                       for w, (n, off) in enumerate(zip(self.sizes, offsets))]

    def _weights(self, policy: Any) -> Any:
        return self.ray.put({k: v.detach().cpu() for k, v in policy.state_dict().items()})

    def collect_chunks(self, policy: Any, iteration: int) -> ChunkRollout:
        ref = self._weights(policy)
        parts = self.ray.get([a.collect_chunks.remote(ref, self.plan.num_chunks, self.total, self.plan.seed, iteration)
                              for a in self.actors])
        _offset_episodes(parts, self.sizes)
        return ChunkRollout.concat(parts)

    def collect_groups(self, policy: Any, iteration: int) -> GroupRollout:
        ref, p = self._weights(policy), self.plan
        results = self.ray.get([a.collect_groups.remote(ref, p.num_chunks, p.groups, p.group_size, p.seed, iteration)
                                for a in self.actors])
        parts = [r[0] for r in results]
        _offset_episodes(parts, self.sizes)
        reward = np.concatenate([r[1] for r in results])
        return GroupRollout(_pad_concat(parts), np.repeat(np.arange(p.groups), p.group_size), reward)

    def close(self) -> None:
        self.ray.get([a.close.remote() for a in self.actors])
        for a in self.actors:
            self.ray.kill(a)
