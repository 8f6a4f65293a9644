"""LeRobotDataset I/O in the project's contract (lerobot's own class, local root, no hub).

Episodes keep what later fine-tuning routes need, not only what behaviour cloning needs:
per-frame reward, success and done flags (``next.reward``, ``next.success``, ``next.done``,
LeRobot's names), so offline chunked TD can learn from demonstrations, failed rollouts and
deployed episodes alike. Extra per-frame features (e.g. the deploy loop's executed action or
intervention flag) are declared with ``extra_features``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, TASK_KEY
from vla_rft.errors import UserInputError

REWARD_KEY = "next.reward"
SUCCESS_KEY = "next.success"
DONE_KEY = "next.done"

# lerobot's hub client must never try the network here; local roots only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@contextmanager
def _progress_bars_kept() -> Iterator[None]:
    """Keep Hugging Face datasets' progress-bar setting across a lerobot call.

    lerobot's ``SuppressProgressBars`` turns the bars back on when it exits, even where a command
    had turned them off, so every later episode would print a ``Map`` bar on the user's terminal.
    """
    from datasets.utils import logging as ds_logging

    enabled = ds_logging.is_progress_bar_enabled()
    try:
        yield
    finally:
        if not enabled:
            ds_logging.disable_progress_bar()


def contract_features(
    cameras: list[str],
    image_size: tuple[int, int],
    state_dim: int,
    action_dim: int,
    *,
    storage: str = "image",
    extra_features: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """LeRobot feature spec for the contract (+ reward/success/done, + extras).

    ``storage="image"`` keeps frames as PNG inside the parquet files: random access during
    training needs no video decoding (the right trade on a small CPU). ``"video"`` encodes
    mp4 (AV1), smaller on disk, decoded with torchcodec.
    """
    if storage not in ("image", "video"):
        raise UserInputError(f"storage must be 'image' or 'video', got '{storage}'")
    h, w = image_size
    feats: dict[str, dict[str, Any]] = {
        IMAGE_PREFIX + cam: {"dtype": storage, "shape": (h, w, 3), "names": ["height", "width", "channels"]}
        for cam in cameras
    }
    feats[STATE_KEY] = {"dtype": "float32", "shape": (state_dim,), "names": None}
    feats[ACTION_KEY] = {"dtype": "float32", "shape": (action_dim,), "names": None}
    feats[REWARD_KEY] = {"dtype": "float32", "shape": (1,), "names": None}
    feats[SUCCESS_KEY] = {"dtype": "bool", "shape": (1,), "names": None}
    feats[DONE_KEY] = {"dtype": "bool", "shape": (1,), "names": None}
    feats.update(dict(extra_features or {}))
    return feats


class EpisodeWriter:
    """Writes contract frames into a new LeRobotDataset at ``root`` (which must not exist)."""

    def __init__(self, root: str | os.PathLike, features: dict[str, dict[str, Any]], *, fps: int,
                 repo_id: str | None = None, robot_type: str = "vla_rft_arm") -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        root = Path(root)
        if root.exists():
            raise FileExistsError(f"dataset root '{root}' already exists; choose a new --out")
        self.features = features
        with _progress_bars_kept():
            self.dataset = LeRobotDataset.create(
                repo_id=repo_id or f"local/{root.name}", fps=fps, features=features, root=root,
                robot_type=robot_type, use_videos=any(f["dtype"] == "video" for f in features.values()),
            )
        self.frames_in_episode = 0

    def add_frame(self, obs: Mapping[str, Any], action: np.ndarray, *, reward: float, success: bool,
                  done: bool, extra: Mapping[str, Any] | None = None) -> None:
        """One step: the observation the action was chosen from, the action, and its outcome."""
        frame: dict[str, Any] = {k: np.asarray(obs[k]) for k in self.features if k.startswith(IMAGE_PREFIX)}
        frame[STATE_KEY] = np.asarray(obs[STATE_KEY], dtype=np.float32)
        frame[ACTION_KEY] = np.asarray(action, dtype=np.float32)
        frame[REWARD_KEY] = np.array([reward], dtype=np.float32)
        frame[SUCCESS_KEY] = np.array([bool(success)])
        frame[DONE_KEY] = np.array([bool(done)])
        for k, v in (extra or {}).items():
            frame[k] = np.asarray(v, dtype=self.features[k]["dtype"] if self.features[k]["dtype"] not in ("image", "video") else None)
        frame[TASK_KEY] = str(obs[TASK_KEY])
        self.dataset.add_frame(frame)
        self.frames_in_episode += 1

    def save_episode(self) -> None:
        if self.frames_in_episode == 0:
            raise ValueError("save_episode() called with no frames added")
        with _progress_bars_kept():
            self.dataset.save_episode()
        self.frames_in_episode = 0

    def discard_episode(self) -> None:
        """Drop the frames of the episode in progress (e.g. an episode aborted by the user)."""
        if self.frames_in_episode:
            self.dataset.clear_episode_buffer()
            self.frames_in_episode = 0

    def reopen(self) -> None:
        """Open the finalized dataset again for appending (LeRobot starts new files on resume)."""
        self.dataset = open_dataset(self.dataset.root)

    def finalize(self) -> None:
        """Flush metadata and close the parquet writers; the dataset is loadable afterwards."""
        with _progress_bars_kept():
            self.dataset.finalize()


def open_dataset(root: str | os.PathLike, *, delta_timestamps: dict[str, list[float]] | None = None):
    """Open a local LeRobotDataset (no hub); a clear error if ``root`` is not one."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"'{root}' is not a LeRobotDataset root (no meta/info.json)")
    with _progress_bars_kept():
        return LeRobotDataset(f"local/{root.name}", root=root, delta_timestamps=delta_timestamps)
