"""Vector envs for on-policy fine-tuning: the sims tasks with SAME_STEP autoreset.

``sims.make_vec_env`` keeps gymnasium's default NEXT_STEP autoreset (right for the evaluation
harness, which stops reading an env once it is done). Chunked RL prefers SAME_STEP: the step
that ends an episode already returns the next episode's first observation, so every env can
start every chunk (see :mod:`vla_rft.algorithms.rollout`). Async workers are spawned without
shared memory for the reasons given in ``sims.make_vec_env``.
"""

from __future__ import annotations

from typing import Any


def make_chunk_vec_env(task: str, num_envs: int, vectorization: str = "sync", **env_kwargs: Any) -> Any:
    """``num_envs`` copies of sims task ``task`` as a SAME_STEP-autoreset vector env.

    ``env_kwargs`` go to ``sims.SimEnv`` (obs_mode, cameras, image_size, reward_type, ...).
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    import sims

    sims.list_tasks()  # registers the gym ids
    fns = [lambda: sims.make_env(task, **env_kwargs) for _ in range(num_envs)]
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn",
                                         autoreset_mode=AutoresetMode.SAME_STEP)
    raise ValueError(f"unknown vectorization '{vectorization}'; choose 'sync' or 'async'")
