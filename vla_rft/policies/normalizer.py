"""Normalization statistics that travel with every policy checkpoint (``normalizer.json``).

- State: ``(s - mean) / std`` (z-score; the proprioception mixes metres, radians and gripper
  openings, so each dimension needs its own scale).
- Action: the 1st/99th percentiles of each dimension are mapped to ``[-1, 1]`` (OpenVLA-OFT):
  robust to the few outlier actions scripted experts and teleoperators produce, and it puts
  every dimension in the range the Gaussian head's initial std and the flow head's noise
  prior are tuned for.

Statistics missing from a checkpoint are an error, never a silent identity: a policy fed
unnormalized inputs still produces actions, just wrong ones (openpi's known failure mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vla_rft.checkpoint import CheckpointError
from vla_rft.errors import UserInputError

NORMALIZER_VERSION = 1
_MIN_STD = 1e-3  # a constant state dimension (e.g. a locked joint) must not divide by ~0
_MIN_RANGE = 1e-4  # a constant action dimension maps to 0 and back to its constant
_FIELDS = ("state_mean", "state_std", "action_low", "action_high")


@dataclass
class Normalizer:
    """State z-scoring and percentile action scaling; all arrays float32."""

    state_mean: np.ndarray  # (S,)
    state_std: np.ndarray  # (S,)
    action_low: np.ndarray  # (A,) 1st percentile (env units)
    action_high: np.ndarray  # (A,) 99th percentile (env units)

    def __post_init__(self) -> None:
        for name in _FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32).reshape(-1))
        if self.state_mean.shape != self.state_std.shape:
            raise UserInputError(f"state_mean {self.state_mean.shape} and state_std {self.state_std.shape} differ")
        if self.action_low.shape != self.action_high.shape:
            raise UserInputError(f"action_low {self.action_low.shape} and action_high {self.action_high.shape} differ")
        if not all(np.all(np.isfinite(getattr(self, n))) for n in _FIELDS):
            raise UserInputError("normalizer statistics contain NaN or inf")
        if np.any(self.state_std <= 0) or np.any(self.action_high <= self.action_low):
            raise UserInputError("normalizer needs state_std > 0 and action_high > action_low")

    @property
    def state_dim(self) -> int:
        return int(self.state_mean.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.action_low.shape[0])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(cls, states: np.ndarray, actions: np.ndarray, *, low_q: float = 1.0,
                  high_q: float = 99.0) -> Normalizer:
        """Statistics of ``states`` (N, S) and ``actions`` (N, A), e.g. every frame of a dataset."""
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        if states.ndim != 2 or actions.ndim != 2 or len(states) == 0 or len(actions) == 0:
            raise UserInputError(f"need states (N, S) and actions (N, A), got {states.shape} and {actions.shape}")
        low, high = np.percentile(actions, [low_q, high_q], axis=0)
        mid, half = (low + high) / 2, np.maximum((high - low) / 2, _MIN_RANGE / 2)
        return cls(state_mean=states.mean(0), state_std=np.maximum(states.std(0), _MIN_STD),
                   action_low=mid - half, action_high=mid + half)

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        """No-op statistics, for policies trained from scratch on contract-range actions."""
        return cls(state_mean=np.zeros(state_dim), state_std=np.ones(state_dim),
                   action_low=-np.ones(action_dim), action_high=np.ones(action_dim))

    # ------------------------------------------------------------------ transforms (torch)
    def _t(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(getattr(self, name), dtype=like.dtype, device=like.device)

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        """(..., S) env units -> z-scores."""
        return (state - self._t("state_mean", state)) / self._t("state_std", state)

    def normalize_action(self, action: torch.Tensor, *, clip: bool = False) -> torch.Tensor:
        """(..., A) env units -> [-1, 1] at the percentiles; ``clip`` for training targets."""
        low, high = self._t("action_low", action), self._t("action_high", action)
        out = 2 * (action - low) / (high - low) - 1
        return out.clamp(-1, 1) if clip else out

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_action` (without clip): normalized -> env units."""
        low, high = self._t("action_low", action), self._t("action_high", action)
        return (action + 1) * 0.5 * (high - low) + low

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": NORMALIZER_VERSION}
        out.update({n: [float(x) for x in getattr(self, n)] for n in _FIELDS})
        return out

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "normalizer") -> Normalizer:
        """Parse :meth:`to_dict` output; raise :class:`CheckpointError` naming what is wrong."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a JSON object of normalization statistics")
        if data.get("version") != NORMALIZER_VERSION:
            raise CheckpointError(f"{where}: version {data.get('version')!r}, this vla-rft reads {NORMALIZER_VERSION}")
        missing = [n for n in _FIELDS if n not in data]
        if missing:
            raise CheckpointError(f"{where}: missing statistics {missing}; refusing to run a policy without them")
        try:
            return cls(**{n: np.asarray(data[n], dtype=np.float32) for n in _FIELDS})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: invalid statistics ({e})") from e
