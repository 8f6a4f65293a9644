"""Trained policies behind ``robots``' policy protocol, for ``vla-rft serve`` and ``vla-rft deploy``.

``robots/`` never imports the training stack; the training stack registers this loader for
the ``checkpoint`` scheme, so a bare checkpoint path given to ``serve``/``deploy`` loads the
policy with :func:`vla_rft.policies.base.load_policy` (checksums, kind and normalizer checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ServedPolicy:
    """A :class:`~vla_rft.policies.base.Policy` exposed as ``robots.policy.PolicyProtocol``."""

    def __init__(self, policy: Any, name: str, control_hz: float | None = 10.0) -> None:
        from robots.policy import PolicyMetadata

        self.policy = policy
        self._metadata = PolicyMetadata(**{**policy.spec.to_metadata(name), "control_hz": control_hz})

    @property
    def metadata(self):
        return self._metadata

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.asarray(self.policy.act(obs_batch, deterministic=True), dtype=np.float32)


def load_served_policy(spec: str, options: dict[str, Any]) -> ServedPolicy:
    """``checkpoint`` loader: ``spec`` is a policy checkpoint directory."""
    from vla_rft.policies.base import load_policy

    return ServedPolicy(load_policy(spec), name=Path(spec).resolve().name)


def register() -> None:
    from robots.policy import register_policy_loader

    register_policy_loader("checkpoint", load_served_policy)
