"""``ray``: the simulator envs split over Ray actors, stepped in parallel (extra ``ray``).

Each actor holds a :class:`~vla_rft.sources.vector.VectorEnvSource` over its slice of the envs;
the learner keeps the policy and does every inference itself (no weights cross the wire), and
the actors step their chunks in parallel. Env ``i`` gets the same seed and therefore the same
episode as with the in-process ``sim`` source, so the two give the same rollouts (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vla_rft.algorithms.rollout import cat_obs
from vla_rft.sources.base import ChunkStep, Obs, SourceSpec, register_source


def split_envs(total: int, workers: int) -> list[int]:
    """Envs per worker (as even as possible; every worker gets at least one)."""
    if workers < 1 or workers > total:
        from vla_rft.errors import UserInputError

        raise UserInputError(f"ray workers must be between 1 and the number of envs ({total}), got {workers}")
    return [total // workers + (1 if w < total % workers else 0) for w in range(workers)]


class _Actor:
    """The body of a Ray actor: a sim source over a slice of the envs."""

    def __init__(self, spec: SourceSpec) -> None:
        from vla_rft.sources.vector import sim_source

        self.source = sim_source(spec)

    def reset(self, seeds: list[int]) -> Obs:
        return self.source.reset(seeds)

    def step(self, chunks: np.ndarray) -> ChunkStep:
        return self.source.step(chunks)

    def close(self) -> None:
        self.source.close()


class RaySource:
    """``spec.workers`` Ray actors, each stepping a slice of ``spec.num_envs`` sim envs."""

    def __init__(self, spec: SourceSpec) -> None:
        try:
            import ray
        except ImportError as e:
            from vla_rft.errors import UserInputError

            raise UserInputError("--source ray needs the ray extra: pip install 'vla-rft[ray]'") from e
        self.sizes = split_envs(spec.num_envs, spec.workers)
        if not ray.is_initialized():
            ray.init(num_cpus=max(2, spec.workers), include_dashboard=False, log_to_driver=False)
        self.ray = ray
        self.num_envs, self.chunk_size = spec.num_envs, spec.chunk_size
        self.offsets = np.cumsum([0] + self.sizes)
        actor = ray.remote(num_cpus=1)(_Actor)
        self.actors = [actor.remote(SourceSpec(spec.task, n, spec.chunk_size, spec.vectorization, spec.env_kwargs,
                                               options=spec.options)) for n in self.sizes]

    def _slices(self) -> list[slice]:
        return [slice(int(a), int(b)) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def reset(self, seeds: Sequence[int]) -> Obs:
        seeds = list(seeds)
        return cat_obs(self.ray.get([a.reset.remote(seeds[s]) for a, s in zip(self.actors, self._slices())]))

    def step(self, chunks: np.ndarray) -> ChunkStep:
        parts: list[ChunkStep] = self.ray.get([a.step.remote(chunks[s]) for a, s in zip(self.actors, self._slices())])
        finals: dict[int, Any] = {}
        for p, off in zip(parts, self.offsets[:-1]):
            finals.update({int(off) + i: o for i, o in p.final_obs.items()})
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])
        return ChunkStep(cat_obs([p.obs for p in parts]), cat("rewards"), cat("executed"), cat("terminated"),
                         cat("truncated"), cat("success"), finals)

    def close(self) -> None:
        self.ray.get([a.close.remote() for a in self.actors])
        for a in self.actors:
            self.ray.kill(a)


@register_source("ray")
def ray_source(spec: SourceSpec) -> RaySource:
    return RaySource(spec)
