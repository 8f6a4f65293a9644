"""A deterministic counting env for checking chunk bookkeeping by hand.

Reward 1 every step; ``state[0]`` = steps taken in the episode / 10, ``state[1]`` = how many
resets the env has had; the episode is truncated after ``length`` steps, or terminated there
with ``terminate=True``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from policy_fixtures import ACTION_DIM, IMAGE, STATE_DIM


class CounterEnv(gym.Env):
    def __init__(self, length: int, terminate: bool = False) -> None:
        self.length, self.terminate = length, terminate
        self.observation_space = spaces.Dict({
            "observation.images.front": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
            "observation.state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "task": spaces.Text(32, charset=frozenset("abcdefghijklmnopqrstuvwxyz ")),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.t, self.resets = 0, -1

    def _obs(self):
        state = np.zeros(STATE_DIM, np.float32)
        state[0], state[1] = self.t / 10, self.resets
        return {"observation.images.front": np.zeros((IMAGE, IMAGE, 3), np.uint8), "observation.state": state,
                "task": "count"}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.resets = 0, self.resets + 1
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.t += 1
        end = self.t >= self.length
        return self._obs(), 1.0, end and self.terminate, end and not self.terminate, {"is_success": end and self.terminate}


def counter_vec_env(n: int, length: int, mode: str = "same_step", terminate: bool = False):
    return gym.vector.SyncVectorEnv([lambda: CounterEnv(length, terminate) for _ in range(n)],
                                    autoreset_mode=AutoresetMode[mode.upper()])


def counter_source(n: int, length: int, terminate: bool = False, chunk_size: int = 4):
    """The counting env as a rollout source (chunks of ``chunk_size``, executed in the env)."""
    from vla_rft.sources.vector import VectorEnvSource

    return VectorEnvSource([lambda: CounterEnv(length, terminate) for _ in range(n)], chunk_size)
