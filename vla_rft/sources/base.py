"""The rollout-source interface: batched, chunk-level environments for every fine-tuning route.

A **rollout source** holds N environments that advance one *action chunk* at a time:

- ``reset(seeds) -> obs``: every env starts a new episode from its seed (a simulator reset, a
  recorded initial state, or a world model's context frames indexed by the seed).
- ``step(chunks (N, h, A)) -> ChunkStep``: each env executes its chunk's actions in order and
  **stops executing as soon as its episode ends** (no filler action ever reaches the next
  episode); an env whose episode ended is reset before the step returns (its next
  observation starts the new episode; the ended episode's last observation is in
  ``final_obs``). Per-step rewards come back as (N, h) with an executed-steps mask.

The MuJoCo vector env (sync or async), Ray workers and a small fake implement it
(:mod:`vla_rft.sources.vector`, :mod:`vla_rft.sources.ray_source`,
:mod:`vla_rft.sources.fake`); a learned world model is one more. Sources are registered by
name (:func:`register_source`) and built from a :class:`SourceSpec` by :func:`make_source`,
which is how ``vla-rft finetune --source NAME`` picks one without the trainer knowing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Obs = dict[str, Any]


@dataclass
class ChunkStep:
    """What one chunk step of N envs returns (every array has N rows)."""

    obs: Obs  # the next chunk's start: for an env whose episode ended, the new episode's first obs
    rewards: np.ndarray  # (N, h) float64 per-step rewards, 0 where not executed
    executed: np.ndarray  # (N, h) bool, a prefix of True: the steps the env really took
    terminated: np.ndarray  # (N,) bool: the episode ended by termination (success / failure state)
    truncated: np.ndarray  # (N,) bool: the episode ended by its time limit (bootstrap from final_obs)
    success: np.ndarray  # (N,) bool: the task succeeded on the chunk's last executed step
    final_obs: dict[int, Obs] = field(default_factory=dict)  # env -> one-row obs of an ended episode's last step

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


class RolloutSource(Protocol):
    """N environments advanced one action chunk at a time (see the module docstring)."""

    num_envs: int
    chunk_size: int

    def reset(self, seeds: Sequence[int]) -> Obs: ...

    def step(self, chunks: np.ndarray) -> ChunkStep: ...

    def close(self) -> None: ...


@dataclass
class SourceSpec:
    """How to build a source (plain data: it is shipped to Ray actors and stored in run configs)."""

    task: str
    num_envs: int
    chunk_size: int
    vectorization: str = "sync"  # sync | async (vector env sources)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the task's env
    workers: int = 2  # ray: actors splitting the envs
    options: dict[str, Any] = field(default_factory=dict)  # anything a registered source reads


SourceFactory = Callable[[SourceSpec], RolloutSource]
_SOURCES: dict[str, SourceFactory] = {}


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator: make ``factory(spec) -> RolloutSource`` available as ``--source name``."""

    def deco(factory: SourceFactory) -> SourceFactory:
        _SOURCES[name] = factory
        return factory

    return deco


def available_sources() -> list[str]:
    _register_builtins()
    return sorted(_SOURCES)


def make_source(name: str, spec: SourceSpec) -> RolloutSource:
    """Build the source registered as ``name``; an unknown name is a user error naming the choices."""
    from vla_rft.errors import UserInputError

    _register_builtins()
    if name not in _SOURCES:
        raise UserInputError(f"unknown rollout source '{name}'; registered: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name](spec)


def _register_builtins() -> None:
    import vla_rft.sources.fake
    import vla_rft.sources.mjx_source  # jax is imported when an mjx source is built, not here
    import vla_rft.sources.ray_source
    import vla_rft.sources.vector  # noqa: F401
    import world_models.source  # noqa: F401  (the imagined env)
