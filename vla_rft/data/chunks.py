"""Chunk windows for training: for every frame t, the next h actions (and rewards), padded and
masked where the episode ends before t + h.

The whole dataset is read once into numpy arrays (through lerobot's LeRobotDataset and its
Hugging Face table) so that sampling a batch is array indexing, not per-frame decoding: at the
sizes this project trains on (tens of thousands of 64x64 frames) that fits in memory and keeps
a 2-core CPU busy with learning. The padding rule is LeRobot's (``delta_timestamps`` clamps to
the episode's last frame and sets ``<key>_is_pad``), so windows agree with
``LeRobotDataset(..., delta_timestamps={"action": [k / fps for k in range(h)]})``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, TASK_KEY
from vla_rft.data.lerobot_io import DONE_KEY, REWARD_KEY, SUCCESS_KEY, open_dataset
from vla_rft.errors import UserInputError


@dataclass
class EpisodeTable:
    """All frames of a dataset as arrays; ``arrays`` keys are LeRobot feature names."""

    arrays: dict[str, np.ndarray]
    tasks: list[str]  # task strings by task_index
    episode_start: np.ndarray  # (N,) index of the first frame of each frame's episode
    episode_end: np.ndarray  # (N,) index one past the last frame of each frame's episode
    fps: int

    @property
    def cameras(self) -> list[str]:
        return sorted(k[len(IMAGE_PREFIX):] for k in self.arrays if k.startswith(IMAGE_PREFIX))

    def __len__(self) -> int:
        return len(self.arrays[ACTION_KEY])


def load_episode_table(root: str | os.PathLike) -> EpisodeTable:
    """Read a LeRobotDataset (local root) into memory."""
    ds = open_dataset(root)
    cols = ds.hf_dataset.with_format("numpy")[:]
    keys = [k for k in ds.features if k in cols and ds.features[k]["dtype"] != "video"]
    if any(ds.features[k]["dtype"] == "video" for k in ds.features):
        raise UserInputError(f"'{root}' stores video; chunk windows read image-storage datasets (collect --storage image)")
    arrays = {k: np.asarray(cols[k]) for k in keys}
    ep = arrays["episode_index"]
    if len(ep) and np.any(np.diff(ep) < 0):
        raise UserInputError(f"'{root}': frames are not grouped by episode")
    bounds = np.flatnonzero(np.diff(ep)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ep)]])
    lengths = ends - starts
    tasks_df = ds.meta.tasks
    tasks = [None] * len(tasks_df)
    for task, row in tasks_df.iterrows():
        tasks[int(row["task_index"])] = str(task)
    return EpisodeTable(
        arrays=arrays, tasks=tasks,
        episode_start=np.repeat(starts, lengths), episode_end=np.repeat(ends, lengths), fps=int(ds.fps),
    )


class ChunkWindows:
    """Indexable windows ``(o_t, a_{t:t+h}, r_{t:t+h}, o_{t+h})`` over an :class:`EpisodeTable`."""

    def __init__(self, table: EpisodeTable, horizon: int) -> None:
        if horizon < 1:
            raise UserInputError(f"chunk horizon must be >= 1, got {horizon}")
        self.table = table
        self.horizon = horizon

    def __len__(self) -> int:
        return len(self.table)

    def window_indices(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices (B, h) clamped to each episode's last frame, and the pad mask (B, h)."""
        idx = np.asarray(idx)
        raw = idx[:, None] + np.arange(self.horizon)[None, :]
        last = self.table.episode_end[idx][:, None] - 1
        return np.minimum(raw, last), raw > last

    def batch(self, idx: np.ndarray) -> dict[str, Any]:
        """A training batch for frame indices ``idx`` (B,). Shapes:

        - ``observation.images.<cam>`` (B, H, W, 3) uint8, ``observation.state`` (B, S), ``task`` list[str]
        - ``action`` (B, h, A), ``action_is_pad`` (B, h) bool (padded steps repeat the last action)
        - ``next.reward`` (B, h) (0 where padded), ``next.done`` (B,) bool: the episode ends inside the window
        - ``next_index`` (B,) frame index of o_{t+h} (clamped to the episode's last frame)
        """
        a = self.table.arrays
        idx = np.asarray(idx, dtype=np.int64)
        win, pad = self.window_indices(idx)
        out: dict[str, Any] = {k: a[k][idx] for k in a if k.startswith(IMAGE_PREFIX)}
        out[STATE_KEY] = a[STATE_KEY][idx]
        out[TASK_KEY] = [self.table.tasks[i] for i in a["task_index"][idx]]
        out[ACTION_KEY] = a[ACTION_KEY][win]
        out["action_is_pad"] = pad
        if REWARD_KEY in a:
            out[REWARD_KEY] = np.where(pad, 0.0, a[REWARD_KEY].reshape(-1)[win]).astype(np.float32)
        end = self.table.episode_end[idx]
        out[DONE_KEY] = idx + self.horizon >= end
        if SUCCESS_KEY in a:
            out[SUCCESS_KEY] = a[SUCCESS_KEY].reshape(-1)[win].any(axis=1)
        out["next_index"] = np.minimum(idx + self.horizon, end - 1)
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.batch(np.array([i]))
        return {k: v[0] for k, v in b.items()}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        return self.batch(rng.integers(0, len(self), size=batch_size))
