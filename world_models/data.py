"""Training sequences for the world model: K chunk steps from any frame of any episode.

A sequence starting at frame t has chunk boundaries b_k = t + k h (k = 0..K). Transition k
(b_k -> b_{k+1}) is **valid** when its chunk starts inside the episode; its actions are the
frames b_k .. b_k + h - 1 (past the episode's end they repeat the last action, and the target
frame is the episode's last stored frame, the nearest observation a LeRobotDataset keeps), and
its success label says whether ``next.success`` is set on any executed step of the chunk.
Episodes come from any LeRobotDataset with the contract's features and success labels: expert
demos, policy rollouts (``vla-rft collect --policy``), deployed episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY
from vla_rft.data.lerobot_io import SUCCESS_KEY
from vla_rft.errors import UserInputError


class ChunkSequences:
    """Indexable K-step chunk sequences over an :class:`~vla_rft.data.chunks.EpisodeTable`."""

    def __init__(self, table: Any, chunk_size: int, steps: int, cameras: list[str]) -> None:
        if chunk_size < 1 or steps < 1:
            raise UserInputError(f"chunk_size and steps must be >= 1, got {chunk_size} and {steps}")
        if SUCCESS_KEY not in table.arrays:
            raise UserInputError(f"the world model's data needs '{SUCCESS_KEY}' labels (vla-rft collect writes them)")
        self.table, self.h, self.k, self.cameras = table, int(chunk_size), int(steps), list(cameras)
        self.success = np.asarray(table.arrays[SUCCESS_KEY]).reshape(-1).astype(bool)

    def __len__(self) -> int:
        return len(self.table)

    def episode_starts(self) -> np.ndarray:
        """Index of every episode's first frame."""
        return np.unique(self.table.episode_start)

    def batch(self, idx: np.ndarray) -> dict[str, Any]:
        """Sequences starting at frames ``idx`` (B,). Shapes:

        - ``frames``: {camera: uint8 (B, K+1, H, W, 3)} at the boundaries; ``state`` (B, K+1, S)
        - ``action`` (B, K, h, A); ``valid`` (B, K) bool; ``success`` (B, K) bool
        """
        a, h, k = self.table.arrays, self.h, self.k
        idx = np.asarray(idx, dtype=np.int64)
        end = self.table.episode_end[idx][:, None]  # (B, 1)
        bounds = idx[:, None] + h * np.arange(k + 1)[None, :]  # (B, K+1)
        frame_idx = np.minimum(bounds, end - 1)
        steps = bounds[:, :k, None] + np.arange(h)[None, None, :]  # (B, K, h)
        executed = steps < end[:, :, None]
        act_idx = np.minimum(steps, end[:, :, None] - 1)
        return {
            "frames": {cam: a[IMAGE_PREFIX + cam][frame_idx] for cam in self.cameras},
            STATE_KEY: a[STATE_KEY][frame_idx].astype(np.float32),
            ACTION_KEY: a[ACTION_KEY][act_idx].astype(np.float32),
            "valid": bounds[:, :k] < end,
            "success": (self.success[act_idx] & executed).any(axis=2),
        }

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        return self.batch(rng.integers(0, len(self), size=batch_size))
