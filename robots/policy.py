"""What the policy server serves: a :class:`PolicyProtocol` and its :class:`PolicyMetadata`.

Any object with ``metadata`` and ``act(obs_batch) -> chunk (B, h, A)`` can be served; the trained
VLA plugs in through a *policy loader* (:func:`register_policy_loader`), selected by the scheme of
the ``--policy`` spec (``scripted:zero``, ``scripted:hold``, a checkpoint path handled by the
``checkpoint`` loader once the training stack registers one, or ``--loader module:function``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from robots.config import ConfigError, did_you_mean, from_mapping
from vla_rft.contract import STATE_KEY


@dataclass
class PolicyMetadata:
    """Sent to every client on connect: what the policy expects and returns."""

    name: str
    """Policy name (checkpoint name or ``scripted:<kind>``)."""
    action_dim: int
    """A, the last dimension of every action."""
    chunk_size: int
    """h, the number of actions in a chunk."""
    state_dim: int
    """S, the dimension of ``observation.state`` the policy expects."""
    cameras: list[str] = field(default_factory=list)
    """Camera names the policy needs (``observation.images.<name>``)."""
    image_shape: list[int] | None = None
    """``[H, W]`` the policy expects for every camera; null accepts any."""
    action_space: str = "ee_delta"
    """``ee_delta`` (contract arm action, in [-1, 1]) or ``joint_position``."""
    control_hz: float | None = None
    """The control rate the policy was trained at, when known."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form details (normalization version, training run id, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyMetadata:
        return from_mapping(cls, data, "metadata")


@runtime_checkable
class PolicyProtocol(Protocol):
    """The served policy: batched contract observations in, action chunks ``(B, h, A)`` out."""

    @property
    def metadata(self) -> PolicyMetadata: ...

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray: ...


class ScriptedPolicy:
    """Deterministic policies for bring-up: ``zero`` (all zeros) and ``hold``.

    ``hold`` repeats the first ``action_dim`` entries of the state, which holds a
    ``joint_position`` robot whose state starts with ``[joints..., gripper]``. ``zero`` holds an
    ``ee_delta`` robot still (zero delta) with the gripper at its mid command.
    """

    KINDS = ("zero", "hold")

    def __init__(self, kind: str, metadata: PolicyMetadata) -> None:
        if kind not in self.KINDS:
            raise ConfigError(f"unknown scripted policy '{kind}'{did_you_mean(kind, self.KINDS)}")
        if kind == "hold" and metadata.action_dim > metadata.state_dim:
            raise ConfigError("scripted:hold needs action_dim <= state_dim")
        self.kind = kind
        self._metadata = metadata

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def act(self, obs_batch: dict[str, Any]) -> np.ndarray:
        state = np.asarray(obs_batch[STATE_KEY], dtype=np.float32)
        b, h, a = state.shape[0], self._metadata.chunk_size, self._metadata.action_dim
        if self.kind == "zero":
            return np.zeros((b, h, a), np.float32)
        return np.repeat(state[:, None, :a], h, axis=1)


PolicyLoader = Callable[[str, dict[str, Any]], PolicyProtocol]
"""``loader(spec_without_scheme, options) -> policy``; options come from the CLI."""

_LOADERS: dict[str, PolicyLoader] = {}


def register_policy_loader(scheme: str, loader: PolicyLoader) -> None:
    """Make ``<scheme>:<rest>`` specs loadable (``checkpoint`` handles bare paths)."""
    _LOADERS[scheme] = loader


def _load_scripted(kind: str, options: dict[str, Any]) -> PolicyProtocol:
    meta = PolicyMetadata(name=f"scripted:{kind}", action_dim=int(options.get("action_dim", 7)),
                          chunk_size=int(options.get("chunk_size", 10)),
                          state_dim=int(options.get("state_dim", 7)),
                          cameras=list(options.get("cameras", [])),
                          action_space=str(options.get("action_space", "ee_delta")))
    return ScriptedPolicy(kind, meta)


register_policy_loader("scripted", _load_scripted)


def import_object(path: str) -> Any:
    """Import ``package.module:attribute``."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"expected 'package.module:function', got {path!r}")
    return getattr(importlib.import_module(module), attr)


def load_policy(spec: str, options: dict[str, Any] | None = None, loader: str | None = None) -> PolicyProtocol:
    """Resolve a ``--policy`` spec to a served policy.

    ``scheme:rest`` uses the loader registered for ``scheme``; a spec without a known scheme is a
    checkpoint path for the ``checkpoint`` loader. ``loader='pkg.mod:fn'`` overrides both.
    """
    options = options or {}
    if loader is not None:
        policy = import_object(loader)(spec, options)
    else:
        scheme, sep, rest = spec.partition(":")
        if sep and scheme in _LOADERS:
            policy = _LOADERS[scheme](rest, options)
        elif "checkpoint" in _LOADERS:
            policy = _LOADERS["checkpoint"](spec, options)
        else:
            raise ConfigError(
                f"cannot load policy {spec!r}: no 'checkpoint' loader is registered (known schemes: "
                f"{sorted(_LOADERS)}); pass --loader package.module:function")
    if not isinstance(policy, PolicyProtocol):
        raise ConfigError(f"loader for {spec!r} returned {type(policy).__name__}, which lacks "
                          "metadata/act")
    return policy
