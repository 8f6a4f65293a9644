"""A trivial, fast task in the contract's observation format, for learning tests.

"Bring the point home": the state's first three entries are a point p in [-1, 1]^3; the
action's first three move it (p += 0.25 * a[:3]); success when |p| < 0.3 (the episode then
terminates). Dense reward -|p| per step (0 once home, so ending early pays), sparse 1 on success.
Images are constant (the policy must read the state). Episodes time out after 12 steps.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from policy_fixtures import ACTION_DIM, IMAGE, STATE_DIM

TASK = "bring the point home"


class PointHomeEnv(gym.Env):
    """See the module docstring; ``max_steps`` is the time limit (truncation)."""

    def __init__(self, reward_type: str = "dense", max_steps: int = 12, success_radius: float = 0.3) -> None:
        self.reward_type, self.max_steps, self.radius = reward_type, max_steps, success_radius
        self.observation_space = spaces.Dict({
            "observation.images.front": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
            "observation.state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "task": spaces.Text(64, charset=frozenset("abcdefghijklmnopqrstuvwxyz ")),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.p = np.zeros(3)
        self.t = 0

    def _obs(self) -> dict[str, Any]:
        state = np.zeros(STATE_DIM, np.float32)
        state[:3] = self.p
        return {"observation.images.front": np.full((IMAGE, IMAGE, 3), 100, np.uint8),
                "observation.state": state, "task": TASK}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.p = self.np_random.uniform(-1.0, 1.0, 3)
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), -1, 1)
        self.p = np.clip(self.p + 0.25 * a[:3], -1.5, 1.5)
        self.t += 1
        dist = float(np.linalg.norm(self.p))
        success = dist < self.radius
        dense = 0.0 if success else -dist
        reward = dense if self.reward_type == "dense" else float(success)
        return self._obs(), reward, success, self.t >= self.max_steps and not success, {"is_success": success}


def make_point_vec_env(n: int, mode: str = "same_step", **kwargs: Any) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([lambda: PointHomeEnv(**kwargs) for _ in range(n)],
                                    autoreset_mode=AutoresetMode[mode.upper()])


def point_source(n: int, chunk_size: int = 4, **kwargs: Any):
    """Point-home as a rollout source over gymnasium envs (the sim source's machinery)."""
    from vla_rft.sources.vector import VectorEnvSource

    return VectorEnvSource([lambda: PointHomeEnv(**kwargs) for _ in range(n)], chunk_size)
