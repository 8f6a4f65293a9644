"""``fake``: a tiny, fast source in the contract's format, with no simulator (tests, examples).

"Bring the point home", batched in numpy: the state's first three entries are a point p in
[-1, 1]^3; each action's first three entries move it (p += 0.25 a[:3]); the task succeeds (and
the episode terminates) when |p| < ``radius``; episodes are truncated after ``max_steps``.
Reward per step: ``sparse`` 1 on success, or ``dense`` -|p| (0 once home). Images are constant,
so a policy must read the state. It is also the shortest example of a registered source that
is not a gymnasium env, which is what a world model's imagined env will be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY
from vla_rft.sources.base import ChunkStep, Obs, SourceSpec, register_source

INSTRUCTION = "bring the point home"


class PointHomeSource:
    """N point-home envs stepped in numpy (see the module docstring)."""

    def __init__(self, num_envs: int, chunk_size: int, *, state_dim: int = 5, image_size: int = 32,
                 cameras: Sequence[str] = ("front",), max_steps: int = 12, radius: float = 0.3,
                 reward_type: str = "dense") -> None:
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type must be dense or sparse, got '{reward_type}'")
        self.num_envs, self.chunk_size = int(num_envs), int(chunk_size)
        self.state_dim, self.image_size, self.cameras = state_dim, image_size, list(cameras)
        self.max_steps, self.radius, self.reward_type = max_steps, radius, reward_type
        self.p = np.zeros((self.num_envs, 3))
        self.t = np.zeros(self.num_envs, np.int64)
        self.rngs = [np.random.default_rng(0) for _ in range(self.num_envs)]

    def _obs(self, idx: Sequence[int] | None = None) -> Obs:
        idx = np.arange(self.num_envs) if idx is None else np.asarray(idx)
        state = np.zeros((len(idx), self.state_dim), np.float32)
        state[:, :3] = self.p[idx]
        obs: Obs = {IMAGE_PREFIX + c: np.full((len(idx), self.image_size, self.image_size, 3), 100, np.uint8)
                    for c in self.cameras}
        obs[STATE_KEY] = state
        obs[TASK_KEY] = [INSTRUCTION] * len(idx)
        return obs

    def _reset_env(self, i: int) -> None:
        self.p[i] = self.rngs[i].uniform(-1.0, 1.0, 3)
        self.t[i] = 0

    def reset(self, seeds: Sequence[int]) -> Obs:
        for i, s in enumerate(seeds):
            self.rngs[i] = np.random.default_rng(int(s))
            self._reset_env(i)
        return self._obs()

    def step(self, chunks: np.ndarray) -> ChunkStep:
        n, h = self.num_envs, self.chunk_size
        rewards, executed = np.zeros((n, h)), np.zeros((n, h), bool)
        term, trunc, success = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        for i in range(n):
            for k in range(h):
                a = np.clip(np.asarray(chunks[i, k, :3], np.float64), -1.0, 1.0)
                self.p[i] = np.clip(self.p[i] + 0.25 * a, -1.5, 1.5)
                self.t[i] += 1
                executed[i, k] = True
                dist = float(np.linalg.norm(self.p[i]))
                success[i] = dist < self.radius
                rewards[i, k] = float(success[i]) if self.reward_type == "sparse" else (0.0 if success[i] else -dist)
                term[i] = success[i]
                trunc[i] = self.t[i] >= self.max_steps and not success[i]
                if term[i] or trunc[i]:
                    break
        ended = np.flatnonzero(term | trunc)
        finals = {int(i): self._obs([i]) for i in ended}
        for i in ended:
            self._reset_env(int(i))
        return ChunkStep(self._obs(), rewards, executed, term, trunc, success, finals)

    def close(self) -> None:
        pass


@register_source("fake")
def fake_source(spec: SourceSpec) -> PointHomeSource:
    kw = spec.env_kwargs
    return PointHomeSource(spec.num_envs, spec.chunk_size, image_size=int(kw.get("image_size", 32)),
                           cameras=kw.get("cameras", ["front"]), state_dim=int(spec.options.get("state_dim", 5)),
                           max_steps=int(kw.get("max_episode_steps", 12)),
                           reward_type="sparse" if kw.get("reward_type") == "sparse" else "dense")
