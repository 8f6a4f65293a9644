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

Starts and rewards, selectable:

- ``init: sim`` (default): starts from the task's simulator resets, as above. ``init: data``
  (with ``data``: LeRobotDataset roots): episode ``seed`` starts from the first frames of the
  dataset's episode ``seed mod episodes``, and the model also imagines that episode's recorded
  chunks from the same start: the **reference** trajectory.
- ``reward: success`` (default): the success head, as above. ``reward: similarity`` (VLA-RFT's
  verified reward; needs ``init: data``): after every chunk, minus the distance between the
  imagined frames under the policy's chunks and those under the reference chunks (pixel L1 plus
  the mean squared distance of the codec latents, a learned perceptual distance; LPIPS is not
  used: no package ships its backbone weights offline); both sides come from the model, so its
  bias cancels. Episodes then run to the time limit (success is still reported, not ended on).

Options (``SourceSpec.options``): ``world_model`` (checkpoint directory, required),
``success_threshold`` (0.5), ``init``, ``data``, ``reward``. Training through it takes zero real
simulator steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY
from vla_rft.errors import UserInputError
from vla_rft.sources.base import ChunkStep, Obs, SourceSpec, register_source


@dataclass
class ImaginedConfig:
    """How the imagined env starts episodes and pays rewards (--source world-model)."""

    init: str = "sim"
    """sim (the task's simulator resets, seeded) or data (first frames of the episodes in --imagined.data)."""
    data: list[str] = field(default_factory=list)
    """LeRobotDatasets whose episodes start imagined episodes (init data) and give the reference chunks."""
    reward: str = "success"
    """success (the success head, 1 on success, the episode ends) or similarity (minus the distance to the frames imagined under the recorded chunks, init data)."""
    success_threshold: float = 0.5
    """Success probability at which an imagined chunk counts as a success."""

    def options(self) -> dict[str, Any]:
        return {"init": self.init, "data": list(self.data), "reward": self.reward,
                "success_threshold": self.success_threshold}


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
                 success_threshold: float = 0.5, reward: str = "success", starts: DatasetStarts | None = None
                 ) -> None:
        import sims

        if reward not in REWARDS:
            raise UserInputError(f"unknown world-model reward '{reward}'; choose {' or '.join(REWARDS)}")
        if reward == "similarity" and starts is None:
            raise UserInputError("the similarity reward compares with the recorded chunks of dataset episodes: "
                                 "it needs init data (options init=data, data=[...])")
        self.model, self.task, self.num_envs = model, task, int(num_envs)
        self.chunk_size = int(model.cfg.chunk_size)
        self.threshold = float(success_threshold)
        self.reward, self.starts = reward, starts
        self.z_ref: torch.Tensor | None = None  # (N, T, C, g, g) reference latents (init data)
        self.k = np.zeros(int(num_envs), np.int64)  # chunk index in the episode
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
        """Start the episodes of ``rows``: the real sim's reset with ``seeds``, or dataset episodes."""
        if self.starts is None:
            obs = [self.env.reset(seed=int(s))[0] for s in seeds]
        else:
            obs = [self.starts.first_obs(int(s)) for s in seeds]
        cams = self.model.cfg.cameras
        with torch.no_grad():
            z = self.model.encode({c: np.stack([o[IMAGE_PREFIX + c] for o in obs]) for c in cams})
            s = self.model.normalize_state(np.stack([o[STATE_KEY] for o in obs]))
            if self.starts is not None:
                ref = self._reference(z, s, [self.starts.chunks(int(sd), self.max_chunks, self.chunk_size)
                                             for sd in seeds])
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        if self.z is None:
            self.z, self.s = z.clone(), s.clone()
            if self.starts is not None:
                self.z_ref = ref
        else:
            self.z[rows_t], self.s[rows_t] = z, s
            if self.starts is not None:
                assert self.z_ref is not None
                self.z_ref[rows_t] = ref
        self.t[rows] = 0
        self.k[rows] = 0
        for r, o in zip(rows, obs):
            self.instructions[int(r)] = str(o[TASK_KEY])

    @property
    def max_chunks(self) -> int:
        return -(-self.time_limit // self.chunk_size)

    def _reference(self, z: torch.Tensor, s: torch.Tensor, chunks: list[np.ndarray]) -> torch.Tensor:
        """The latents the model imagines under the recorded chunks, one per chunk step: (B, T, ...)."""
        seq = torch.as_tensor(np.stack(chunks), device=self.model.device)  # (B, T, h, A)
        out = []
        for k in range(seq.shape[1]):
            z, s, _ = self.model.step(z, s, seq[:, k])
            out.append(z)
        return torch.stack(out, 1)

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
        rewards = np.zeros((n, h), np.float64)
        if self.reward == "success":
            terminated = success
            rewards[np.flatnonzero(success), steps[success] - 1] = 1.0
        else:
            terminated = np.zeros(n, bool)
            rewards[np.arange(n), steps - 1] = -self._distance_to_reference()
        truncated = ~terminated & (self.t >= self.time_limit)
        self.k += 1
        ended = np.flatnonzero(terminated | truncated)
        finals: dict[int, Obs] = {}
        if len(ended):
            final = self._obs(ended)
            finals = {int(i): {k: (v[j:j + 1] if k != TASK_KEY else [v[j]]) for k, v in final.items()}
                      for j, i in enumerate(ended)}
            self.episodes[ended] += 1
            self._reset_rows(ended, [int(self.seeds[i] * 1_000_003 + self.episodes[i]) for i in ended])
        return ChunkStep(self._obs(), rewards, executed, terminated, truncated, success, finals)

    def _distance_to_reference(self) -> np.ndarray:
        """Per env: pixel L1 between the frames imagined under the policy's and the reference
        chunks at this chunk step, plus the mean squared distance of their latents."""
        assert self.z is not None and self.z_ref is not None
        k = torch.as_tensor(np.minimum(self.k, self.z_ref.shape[1] - 1))
        ref = self.z_ref[torch.arange(self.num_envs), k]
        with torch.no_grad():
            a, b = self.model.decode(self.z), self.model.decode(ref)
            pix = sum((a[c] - b[c]).abs().flatten(1).mean(1) for c in a) / len(a)
            lat = (self.z - ref).pow(2).flatten(1).mean(1)
        return (pix + lat).cpu().numpy().astype(np.float64)

    def close(self) -> None:
        self.env.close()


REWARDS = ("success", "similarity")


class DatasetStarts:
    """Episode starts and recorded chunks of LeRobotDatasets (``init: data``)."""

    def __init__(self, roots: list[str], cameras: list[str]) -> None:
        from vla_rft.commands.pretrain import load_training_table

        self.table = load_training_table(list(roots), list(cameras))
        self.first = np.unique(self.table.episode_start)
        self.cameras = list(cameras)

    def __len__(self) -> int:
        return len(self.first)

    def first_obs(self, seed: int) -> Obs:
        i = int(self.first[seed % len(self.first)])
        a = self.table.arrays
        obs: Obs = {IMAGE_PREFIX + c: a[IMAGE_PREFIX + c][i] for c in self.cameras}
        obs[STATE_KEY] = a[STATE_KEY][i]
        obs[TASK_KEY] = self.table.tasks[int(a["task_index"][i])]
        return obs

    def chunks(self, seed: int, count: int, h: int) -> np.ndarray:
        """The episode's recorded actions as ``count`` chunks (count, h, A); past its end the last
        action repeats."""
        from vla_rft.contract import ACTION_KEY

        i = int(self.first[seed % len(self.first)])
        end = int(self.table.episode_end[i])
        idx = np.minimum(i + np.arange(count * h), end - 1)
        return self.table.arrays[ACTION_KEY][idx].reshape(count, h, -1).astype(np.float32)


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
    init = spec.options.get("init", "sim")
    if init not in ("sim", "data"):
        raise UserInputError(f"unknown world-model init '{init}'; choose sim or data")
    starts = None
    if init == "data":
        if not spec.options.get("data"):
            raise UserInputError("world-model init data needs datasets: options data=[...] (--world_model_data)")
        starts = DatasetStarts(list(spec.options["data"]), model.cfg.cameras)
    return ImaginedSource(model, spec.task, spec.num_envs, spec.env_kwargs,
                          float(spec.options.get("success_threshold", 0.5)), str(spec.options.get("reward", "success")),
                          starts)
