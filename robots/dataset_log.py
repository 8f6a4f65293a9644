"""Logging deployed episodes as LeRobotDataset episodes, one frame per control step.

A frame holds

- ``observation.*`` and ``task``: what the step acted on;
- ``action``: what the robot was actually told to do (the filtered command, or the hold pose);
- ``action.policy``: what the policy (or the operator) proposed before the filter;
- ``intervention``: an operator's action replaced the policy's (ConRFT's human corrections);
- ``safety.held``/``safety.events``/``safety.flags``: hold, number of filter/executor events, and
  a bitmask over :data:`EVENT_KINDS`;
- ``bridge_dropped``: the robot's link (rosbridge) was down or reconnected during the step;
- ``timing.obs_to_command_ms``: from the start of the step to the command leaving;
- ``next.reward``/``next.success``/``next.done`` from an outcome source.

The writer (``vla_rft.data.lerobot_io.EpisodeWriter``) and LeRobot itself are reached through
:mod:`robots.adapters` when a :class:`DeployDataset` is built, never when this module is imported.

Why every episode is finalized and the dataset re-opened: LeRobot keeps its parquet writers open
until ``finalize()``, and a file without its footer is unreadable, so a crash would lose *every*
earlier episode. Finalizing per episode puts each episode in its own closed files; a crash can
only lose the episode in progress.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from robots.adapters import load_adapter
from robots.safety import SafetyEvent
from vla_rft.contract import IMAGE_PREFIX, STATE_KEY

EVENT_KINDS: tuple[str, ...] = (
    "clip_range", "clip_position", "clip_workspace", "clip_velocity", "clip_acceleration",
    "clip_gripper_range", "clip_gripper_rate", "accel_infeasible", "reject_nonfinite",
    "reject_shape", "reject_state", "state_outside_limits", "state_outside_workspace",
    "tracking_error", "hold_stale", "estop_tripped", "estop_latched", "policy_starved",
    "watchdog_hold", "observation_unavailable", "policy_error", "send_failed",
)
"""Bit ``i`` of ``safety.flags`` is set when an event of ``EVENT_KINDS[i]`` happened at the step;
bit 31 stands for any other kind."""

DEPLOY_FEATURE_KEYS = ("action.policy", "intervention", "safety.held", "safety.events",
                       "safety.flags", "bridge_dropped", "timing.obs_to_command_ms")


def deploy_features(action_dim: int) -> dict[str, dict[str, Any]]:
    """LeRobot feature specs of the deploy-only per-frame fields (``extra_features``)."""
    scalar = lambda dtype: {"dtype": dtype, "shape": (1,), "names": None}
    return {
        "action.policy": {"dtype": "float32", "shape": (action_dim,), "names": None},
        "intervention": scalar("bool"),
        "safety.held": scalar("bool"),
        "safety.events": scalar("int32"),
        "safety.flags": scalar("int64"),
        "bridge_dropped": scalar("bool"),
        "timing.obs_to_command_ms": scalar("float32"),
    }


def event_flags(events: Iterable[SafetyEvent]) -> int:
    """The ``safety.flags`` bitmask of a step's events."""
    flags = 0
    for e in events:
        flags |= 1 << (EVENT_KINDS.index(e.kind) if e.kind in EVENT_KINDS else 31)
    return flags


def _frame_obs(obs: dict[str, Any]) -> dict[str, Any]:
    """The contract part of an observation (drops the stamp and any debug entries)."""
    return {k: v for k, v in obs.items() if k in (STATE_KEY, "task") or k.startswith(IMAGE_PREFIX)}


class DeployDataset:
    """A LeRobotDataset written one finalized episode at a time, plus ``meta/deploy_episodes.jsonl``.

    The sidecar holds what is per-episode rather than per-frame (verdict source, loop statistics,
    safety counts, reconnects); each line is written and fsynced after its episode is finalized.
    """

    SIDECAR = "meta/deploy_episodes.jsonl"

    def __init__(self, root: str | os.PathLike[str], features: dict[str, dict[str, Any]], fps: int,
                 robot_type: str) -> None:
        episode_writer = load_adapter("episode_writer")  # vla_rft.data.lerobot_io.EpisodeWriter

        self.root = Path(root)
        self.writer = episode_writer(self.root, features, fps=fps, robot_type=robot_type)
        self.episodes = 0
        self._needs_reopen = False

    def add_frame(self, obs: dict[str, Any], action: np.ndarray, *, reward: float, success: bool,
                  done: bool, extra: dict[str, Any]) -> None:
        if self._needs_reopen:
            self._reopen()
        self.writer.add_frame(obs, action, reward=reward, success=success, done=done, extra=extra)

    def save_episode(self, info: dict[str, Any]) -> None:
        """Save, finalize (closing every parquet file), then append the episode's sidecar line."""
        self.writer.save_episode()
        self.writer.finalize()
        self._needs_reopen = True
        line = json.dumps({"episode_index": self.episodes, **info}, default=_json_default)
        with open(self.root / self.SIDECAR, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.episodes += 1

    def discard_episode(self) -> None:
        self.writer.discard_episode()

    def _reopen(self) -> None:
        """Open the finalized dataset again for appending (LeRobot starts new files on resume)."""
        self.writer.reopen()
        self._needs_reopen = False


def _json_default(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def read_deploy_episodes(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The sidecar lines of a deploy dataset (one dict per finalized episode)."""
    path = Path(root) / DeployDataset.SIDECAR
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
