"""Policies: the interface every algorithm uses (:mod:`.base`), action heads, normalization,
the policy registry, and the built-in VLA (:mod:`.vla`).

Names are exported lazily (PEP 562) so that importing a light submodule (e.g. the optimizer
config in :mod:`.training`) does not import torch; built-in policies register themselves the
first time the registry is consulted.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Evaluation": "base", "Policy": "base", "PolicyInput": "base", "PolicySpec": "base", "TrunkFeatures": "base",
    "available_policies": "base", "load_policy": "base", "load_policy_preset": "base", "make_policy": "base",
    "policy_class": "base", "policy_from_checkpoint": "base", "register_policy": "base",
    "Normalizer": "normalizer", "VLAConfig": "vla", "VLAPolicy": "vla",
}
__all__ = [
    "Evaluation", "Normalizer", "Policy", "PolicyInput", "PolicySpec", "TrunkFeatures", "VLAConfig", "VLAPolicy",
    "available_policies", "load_policy", "load_policy_preset", "make_policy", "policy_class",
    "policy_from_checkpoint", "register_policy",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vla_rft.policies' has no attribute '{name}'")
    return getattr(importlib.import_module(f"vla_rft.policies.{_EXPORTS[name]}"), name)
