"""The imagined env: a world model as a rollout source (``--source world-model``).

Same interface as the simulator source (:mod:`vla_rft.sources.base`): N envs, reset with seeds,
stepped one action chunk (N, h, A) at a time, batched and deterministic under a seed.

- **Reset**: a real initial observation. Episode ``seed`` starts from the task's simulator reset
  with that seed (the same initial state the real sim evaluates from; a reset renders the first
  frames and takes no physics step), encoded into the model's latents.
- **Step**: the dynamics advances every env's latents and state by its whole chunk; frames are
  decoded once per chunk, where the policy reads them. The chunk's success probability comes from
  the model's success head: above ``success_threshold`` the episode **terminates** with success
  and reward 1 on the chunk's last step (the sparse "verified" reward); otherwise the episode is
  **truncated** at the task's time limit (a last chunk that crosses it executes only its steps
  inside the limit).
- An ended env is reset at once, with the seed ``seed * 1_000_003 + episodes_done`` (deterministic).

Options (``SourceSpec.options``): ``world_model`` (checkpoint directory, required) and
``success_threshold`` (0.5). Training through it takes zero real simulator steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY
from vla_rft.errors import UserInputError
from vla_rft.sources.base import ChunkStep, Obs, SourceSpec, register_source


class ImaginedSource:
    """N imagined envs of ``task`` in the world model ``model`` (see the module docstring).

    Args:
        model: a :class:`~world_models.model.WorldModel` (eval mode).
        task: the sims task whose resets start the episodes (and whose time limit ends them).
        num_envs: N.
        env_kwargs: keyword arguments of the task's env for resets (cameras, image size, perturbation).
        success_threshold: success probability at which an imagined episode ends in success.
    """

    def __init__(self, model: Any, task: str, num_envs: int, env_kwargs: dict[str, Any] | None = None,
                 success_threshold: float = 0.5) -> None:
        import sims

        self.model, self.task, self.num_envs = model, task, int(num_envs)
        self.chunk_size = int(model.cfg.chunk_size)
        self.threshold = float(success_threshold)
        kwargs = {k: v for k, v in dict(env_kwargs or {}).items() if k not in ("reward_type", "potential_gamma")}
        kwargs.update(obs_mode="rgb", cameras=list(model.cfg.cameras), image_size=int(model.cfg.image_size[0]))
        self.time_limit = int(kwargs.pop("max_episode_steps", 0) or sims.get_task_class(task).max_episode_steps)
        self.env = sims.make_env(task, **kwargs)
        n = self.num_envs
        self.z: torch.Tensor | None = None
        self.s: torch.Tensor | None = None
        self.t = np.zeros(n, np.int64)
        self.seeds = np.zeros(n, np.int64)
        self.episodes = np.zeros(n, np.int64)
        self.instructions: list[str] = [""] * n

    # ------------------------------------------------------------------ helpers
    def _reset_rows(self, rows: np.ndarray, seeds: Sequence[int]) -> None:
        """Start the episodes of ``rows`` from the real sim's reset with ``seeds``."""
        obs = [self.env.reset(seed=int(s))[0] for s in seeds]
        cams = self.model.cfg.cameras
        with torch.no_grad():
            z = self.model.encode({c: np.stack([o[IMAGE_PREFIX + c] for o in obs]) for c in cams})
            s = self.model.normalize_state(np.stack([o[STATE_KEY] for o in obs]))
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        if self.z is None:
            self.z, self.s = z, s
        else:
            self.z[rows_t], self.s[rows_t] = z, s
        self.t[rows] = 0
        for r, o in zip(rows, obs):
            self.instructions[int(r)] = str(o[TASK_KEY])

    def _obs(self, rows: np.ndarray | None = None) -> Obs:
        assert self.z is not None and self.s is not None
        z, s = (self.z, self.s) if rows is None else (self.z[torch.as_tensor(rows)], self.s[torch.as_tensor(rows)])
        with torch.no_grad():
            frames = self.model.decode(z)
            state = self.model.unnormalize_state(s).cpu().numpy().astype(np.float32)
        out: Obs = {IMAGE_PREFIX + c: self.model.to_uint8(f) for c, f in frames.items()}
        out[STATE_KEY] = state
        out[TASK_KEY] = [self.instructions[i] for i in (range(self.num_envs) if rows is None else rows)]
        return out

    # ------------------------------------------------------------------ the interface
    def reset(self, seeds: Sequence[int]) -> Obs:
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        self.seeds[:] = np.asarray(seeds, np.int64)
        self.episodes[:] = 0
        self._reset_rows(np.arange(self.num_envs), list(seeds))
        return self._obs()

    def step(self, chunks: np.ndarray) -> ChunkStep:
        h, n = self.chunk_size, self.num_envs
        chunks = np.asarray(chunks, np.float32)
        if chunks.shape[:2] != (n, h):
            raise ValueError(f"chunks have shape {chunks.shape}; this source steps ({n}, {h}, A) chunks")
        assert self.z is not None and self.s is not None
        with torch.no_grad():
            self.z, self.s, logit = self.model.step(self.z, self.s, torch.as_tensor(chunks, device=self.model.device))
            p = torch.sigmoid(logit).cpu().numpy()
        steps = np.minimum(h, self.time_limit - self.t)  # steps of this chunk inside the time limit
        executed = np.arange(h)[None, :] < steps[:, None]
        self.t += steps
        success = p > self.threshold
        terminated = success
        truncated = ~success & (self.t >= self.time_limit)
        rewards = np.zeros((n, h), np.float64)
        rewards[np.flatnonzero(success), steps[success] - 1] = 1.0
        ended = np.flatnonzero(terminated | truncated)
        finals: dict[int, Obs] = {}
        if len(ended):
            final = self._obs(ended)
            finals = {int(i): {k: (v[j:j + 1] if k != TASK_KEY else [v[j]]) for k, v in final.items()}
                      for j, i in enumerate(ended)}
            self.episodes[ended] += 1
            self._reset_rows(ended, [int(self.seeds[i] * 1_000_003 + self.episodes[i]) for i in ended])
        return ChunkStep(self._obs(), rewards, executed, terminated, truncated, success, finals)

    def close(self) -> None:
        self.env.close()


@register_source("world-model")
def world_model_source(spec: SourceSpec) -> ImaginedSource:
    """``spec.num_envs`` imagined envs of ``spec.task`` in the world model ``spec.options['world_model']``."""
    import sims
    from world_models.model import load_world_model

    path = spec.options.get("world_model")
    if not path:
        raise UserInputError("the world-model source needs a world model: --world_model DIR (vla-rft world-model train)")
    if spec.task not in [t.name for t in sims.list_tasks()]:
        raise UserInputError(f"unknown task '{spec.task}' (see vla-rft tasks)")
    model = load_world_model(path)
    if model.cfg.chunk_size != spec.chunk_size:
        raise UserInputError(f"the world model steps chunks of {model.cfg.chunk_size} actions, the policy's are "
                             f"{spec.chunk_size}")
    size = spec.env_kwargs.get("image_size")
    if size is not None and [int(size)] * 2 != list(model.cfg.image_size):
        raise UserInputError(f"the world model's frames are {model.cfg.image_size}, the policy reads {size}x{size}")
    missing = [c for c in spec.env_kwargs.get("cameras", []) if c not in model.cfg.cameras]
    if missing:
        raise UserInputError(f"the world model has no camera '{missing[0]}' (it models {model.cfg.cameras})")
    return ImaginedSource(model, spec.task, spec.num_envs, spec.env_kwargs,
                          float(spec.options.get("success_threshold", 0.5)))
