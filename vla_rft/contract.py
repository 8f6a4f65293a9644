"""The observation/action contract shared by sims, datasets, policies, world models and robots.

One plain dict everywhere (names follow LeRobot's dataset features so datasets and policies
interoperate):

- ``observation.images.<camera>``: ``uint8`` array ``(H, W, 3)``; batched ``(B, H, W, 3)``.
- ``observation.state``: ``float32`` proprioception ``(S,)``; batched ``(B, S)``.
- ``task``: the language instruction, a ``str``; batched, a sequence of ``str``.
- ``action``: ``float32`` ``(A,)``; a policy emits a chunk ``(h, A)`` (batched ``(B, h, A)``).

This module depends on numpy only: the robot side imports it without the training stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
TASK_KEY = "task"
ACTION_KEY = "action"

# The built-in MuJoCo arm's action: end-effector delta pose + gripper, every entry in [-1, 1].
#   [0:3] translation of the gripper site in the world (= robot base) frame, scaled by
#         ``ACTION_POS_SCALE`` metres per control step;
#   [3:6] rotation as an axis-angle vector in the world frame, scaled by ``ACTION_ROT_SCALE``
#         radians per control step;
#   [6]   gripper command: -1 fully open, +1 fully closed (absolute, not a delta).
ARM_ACTION_DIM = 7
ACTION_POS_SCALE = 0.02
ACTION_ROT_SCALE = 0.15


class ContractError(ValueError):
    """An observation or action does not follow the contract; the message names the problem."""


def camera_names(obs: Mapping[str, Any]) -> list[str]:
    """Camera names present in an observation dict, sorted."""
    return sorted(k[len(IMAGE_PREFIX):] for k in obs if k.startswith(IMAGE_PREFIX))


def validate_observation(
    obs: Mapping[str, Any],
    *,
    cameras: list[str] | None = None,
    state_dim: int | None = None,
    batched: bool = False,
) -> None:
    """Raise :class:`ContractError` naming the first problem found in ``obs``."""
    if not isinstance(obs, Mapping):
        raise ContractError(f"observation must be a dict, got {type(obs).__name__}")
    lead = 1 if batched else 0
    for cam in cameras or []:
        if IMAGE_PREFIX + cam not in obs:
            raise ContractError(
                f"missing camera '{cam}': observation has cameras {camera_names(obs)}"
            )
    for key in (k for k in obs if k.startswith(IMAGE_PREFIX)):
        img = np.asarray(obs[key])
        if img.dtype != np.uint8 or img.ndim != 3 + lead or img.shape[-1] != 3:
            raise ContractError(
                f"'{key}' must be uint8 {'(B, H, W, 3)' if batched else '(H, W, 3)'}, "
                f"got {img.dtype} {img.shape}"
            )
    if STATE_KEY not in obs:
        raise ContractError(f"observation is missing '{STATE_KEY}'")
    state = np.asarray(obs[STATE_KEY])
    if state.ndim != 1 + lead or not np.issubdtype(state.dtype, np.floating):
        raise ContractError(f"'{STATE_KEY}' must be float32 of rank {1 + lead}, got {state.dtype} {state.shape}")
    if state_dim is not None and state.shape[-1] != state_dim:
        raise ContractError(f"'{STATE_KEY}' has dimension {state.shape[-1]}, expected {state_dim}")
    if not np.all(np.isfinite(state)):
        raise ContractError(f"'{STATE_KEY}' contains NaN or inf")


def validate_action(action: Any, action_dim: int, *, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Return ``action`` as float32 after checking its last dimension, finiteness and range."""
    a = np.asarray(action, dtype=np.float32)
    if a.ndim == 0 or a.shape[-1] != action_dim:
        raise ContractError(f"action has shape {a.shape}, expected last dimension {action_dim}")
    if not np.all(np.isfinite(a)):
        raise ContractError("action contains NaN or inf")
    if np.any(a < low - 1e-6) or np.any(a > high + 1e-6):
        raise ContractError(
            f"action out of range [{low}, {high}]: min {float(a.min()):.3g}, max {float(a.max()):.3g}"
        )
    return a
