"""Rollout sources over gymnasium vector envs: the MuJoCo tasks (``sim``), sync or async.

Each env is wrapped in :class:`ChunkEnv`, whose action is a whole chunk (h, A): it executes the
actions in order **inside the env's own process** and stops at the first step that ends the
episode, so an env never plays a filler action and one vector step is one chunk step for every
env (async workers exchange one message per chunk instead of one per action). The vector env
auto-resets an ended episode in the same step (gymnasium's SAME_STEP mode); its last
observation comes back in ``final_obs``.

Lazy frames: where the env supports ``set_lazy_frames`` / ``request_frames``
(:class:`sims.SimEnv`), cameras are rendered only on the steps whose observation is read: the
chunk's last step, resets and episode ends (the data are the same, tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vla_rft.contract import TASK_KEY
from vla_rft.errors import UserInputError
from vla_rft.sources.base import ChunkStep, Obs, SourceSpec, register_source


class ChunkEnv(gym.Wrapper):
    """One env whose action is a chunk (h, A); ``step`` runs it until the chunk or the episode ends.

    The info of a chunk step holds ``chunk_rewards`` (h,) (0 after the last executed step),
    ``chunk_executed`` (the steps taken) and ``is_success`` of the last executed step."""

    def __init__(self, env: gym.Env, chunk_size: int, lazy_frames: bool = True) -> None:
        super().__init__(env)
        self.h = int(chunk_size)
        inner = env.action_space
        self.action_space = spaces.Box(np.repeat(inner.low[None], self.h, 0), np.repeat(inner.high[None], self.h, 0),
                                       (self.h, *inner.shape), inner.dtype)
        self.lazy = bool(lazy_frames) and hasattr(env.unwrapped, "set_lazy_frames")
        if self.lazy:
            env.unwrapped.set_lazy_frames(True)

    def step(self, chunk: np.ndarray) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        rewards = np.zeros(self.h, np.float64)
        info: dict[str, Any] = {}
        obs, term, trunc, k = None, False, False, 0
        for k in range(self.h):
            if self.lazy and k == self.h - 1:
                self.env.unwrapped.request_frames()
            obs, r, term, trunc, info = self.env.step(chunk[k])
            rewards[k] = float(r)
            if term or trunc:
                break
        info = dict(info)
        info["chunk_rewards"] = rewards
        info["chunk_executed"] = k + 1
        info["is_success"] = bool(info.get("is_success", False))
        return obs, float(rewards.sum()), bool(term), bool(trunc), info


def _per_env(info: dict[str, Any], key: str, ended: np.ndarray, default: Any) -> list[Any]:
    """``info[key]`` of each env, from ``final_info`` for envs whose episode ended this step."""
    n = len(ended)
    final = info.get("final_info", {})
    out = []
    for i in range(n):
        src = final if ended[i] else info
        if isinstance(src, dict) and key in src and src.get(f"_{key}", np.ones(n, bool))[i]:
            out.append(src[key][i])
        else:
            out.append(default)
    return out


def _final_obs(info: dict[str, Any], idx: np.ndarray) -> dict[int, Obs]:
    """One-row observations of the episodes that ended (SAME_STEP autoreset's ``final_obs``)."""
    final = info["final_obs"]
    out: dict[int, Obs] = {}
    for i in idx:
        i = int(i)
        row = final[i] if not isinstance(final, dict) else {k: v[i] for k, v in final.items() if not k.startswith("_")}
        out[i] = {k: ([str(v)] if k == TASK_KEY else np.asarray(v)[None]) for k, v in row.items()}
    return out


def obs_batch(obs: Obs) -> Obs:
    """A vector env observation as a contract batch: arrays, the instructions as a list."""
    out: Obs = {k: np.asarray(v) for k, v in obs.items() if k != TASK_KEY}
    out[TASK_KEY] = [str(t) for t in obs[TASK_KEY]]
    return out


class VectorEnvSource:
    """A :class:`~vla_rft.sources.base.RolloutSource` over ``env_fns`` (gymnasium envs).

    Args:
        env_fns: one constructor per env (each returns a gymnasium env with a (A,) action).
        chunk_size: h, the actions per chunk.
        vectorization: ``sync`` (one process) or ``async`` (a spawned subprocess per env).
        lazy_frames: render cameras only where observations are read (envs that support it).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], chunk_size: int, vectorization: str = "sync",
                 lazy_frames: bool = True) -> None:
        from gymnasium.vector import AutoresetMode

        fns = [_ChunkEnvFn(fn, chunk_size, lazy_frames) for fn in env_fns]
        if vectorization == "sync":
            self.env = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
        elif vectorization == "async":
            self.env = gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn",
                                                 autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            raise UserInputError(f"unknown vectorization '{vectorization}'; choose 'sync' or 'async'")
        self.num_envs, self.chunk_size = len(fns), int(chunk_size)

    def reset(self, seeds: Sequence[int]) -> Obs:
        obs, _ = self.env.reset(seed=[int(s) for s in seeds])
        return obs_batch(obs)

    def step(self, chunks: np.ndarray) -> ChunkStep:
        chunks = np.asarray(chunks, np.float32)
        if chunks.shape[:2] != (self.num_envs, self.chunk_size):
            raise ValueError(f"chunks have shape {chunks.shape}; this source steps ({self.num_envs}, "
                             f"{self.chunk_size}, A) chunks")
        raw, _, term, trunc, info = self.env.step(chunks)
        term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        ended = term | trunc
        h = self.chunk_size
        rewards = np.stack([np.asarray(r, np.float64) for r in _per_env(info, "chunk_rewards", ended, np.zeros(h))])
        executed_n = np.array(_per_env(info, "chunk_executed", ended, h), np.int64)
        success = np.array(_per_env(info, "is_success", ended, False), bool)
        executed = np.arange(h)[None, :] < executed_n[:, None]
        finals = _final_obs(info, np.flatnonzero(ended)) if ended.any() else {}
        return ChunkStep(obs_batch(raw), rewards, executed, term, trunc, success, finals)

    def close(self) -> None:
        self.env.close()


class _ChunkEnvFn:
    """A picklable env constructor (async workers are spawned) that wraps in :class:`ChunkEnv`."""

    def __init__(self, fn: Callable[[], gym.Env], chunk_size: int, lazy: bool) -> None:
        self.fn, self.chunk_size, self.lazy = fn, chunk_size, lazy

    def __call__(self) -> gym.Env:
        return ChunkEnv(self.fn(), self.chunk_size, self.lazy)


class _SimEnvFn:
    """``sims.make_env(task, **kwargs)`` as a picklable constructor."""

    def __init__(self, task: str, kwargs: dict[str, Any]) -> None:
        self.task, self.kwargs = task, dict(kwargs)

    def __call__(self) -> gym.Env:
        import sims

        return sims.make_env(self.task, **self.kwargs)


@register_source("sim")
def sim_source(spec: SourceSpec) -> VectorEnvSource:
    """The project's MuJoCo tasks (``sims``), ``spec.num_envs`` of ``spec.task``."""
    import sims

    names = [t.name for t in sims.list_tasks()]
    if spec.task not in names:
        raise UserInputError(f"unknown task '{spec.task}' (see vla-rft tasks)")
    return VectorEnvSource([_SimEnvFn(spec.task, spec.env_kwargs) for _ in range(spec.num_envs)], spec.chunk_size,
                           spec.vectorization, lazy_frames=bool(spec.options.get("lazy_frames", True)))
