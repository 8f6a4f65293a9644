"""The policy interface every algorithm uses, the policy registry, and policy checkpoints.

A policy maps a batched contract observation (``observation.images.<cam>`` uint8 (B, H, W, 3),
``observation.state`` (B, S), ``task`` list[str]; numpy or torch) to action chunks (B, h, A).

Action spaces (the one thing RL code must not mix up):

- ``act`` returns **env units**, de-normalized and clipped to the contract's [-1, 1].
- ``sample`` returns the chunk in env units **unclipped** (the affine image of the head's
  sample, so its log-prob stays exact; the executor clips, as with any Gaussian policy) and
  ``log_prob`` in **normalized** action space: the sum over the chunk's h * A dims of the
  head's density (the Jacobian of the affine map is a constant, so PPO ratios and GRPO are
  unaffected, and KLs between policies sharing a normalizer are too).
- ``sample_latent`` returns the head's latent (B, L, h, A) in normalized space: what
  ``log_prob`` is really defined on. For the Gaussian head it is the chunk (L = 1) and
  ``log_prob(obs, chunk)`` works on env-unit chunks too; for the flow head it is the Euler
  chain (L = K + 1), which RL code must store (``latent_to_chunk`` gives the env chunk).

Checkpoints are :mod:`vla_rft.checkpoint` directories of kind ``"policy"``: ``config.json``
holds ``{"policy_type", "policy_format", "model": <config>}``, ``normalizer.json`` the
statistics (required), ``model.safetensors`` the weights. :func:`load_policy` dispatches on
``policy_type`` through the registry and checks the policy against what the caller's
environment provides.
"""

from __future__ import annotations

import difflib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch
from torch import nn

from vla_rft.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from vla_rft.config import CONFIGS_DIR, ConfigError, from_dict, resolve_preset, to_dict
from vla_rft.contract import (
    ACTION_KEY,
    IMAGE_PREFIX,
    STATE_KEY,
    TASK_KEY,
    ContractError,
    validate_observation,
)
from vla_rft.errors import UserInputError
from vla_rft.policies.heads import ActionHead
from vla_rft.policies.normalizer import Normalizer

POLICY_KIND = "policy"
POLICY_FORMAT = 1

Obs = Mapping[str, Any]
P = TypeVar("P", bound=type)


@dataclass
class PolicySpec:
    """What a policy consumes and emits; checked against every observation and environment."""

    cameras: list[str]
    image_size: tuple[int, int]  # (H, W)
    state_dim: int
    action_dim: int
    chunk_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self, name: str) -> dict[str, Any]:
        """Fields of the policy server's ``PolicyMetadata`` (robots/policy.py)."""
        return {"name": name, "action_dim": self.action_dim, "chunk_size": self.chunk_size,
                "state_dim": self.state_dim, "cameras": list(self.cameras),
                "image_shape": list(self.image_size), "action_space": "ee_delta", "extra": dict(self.extra)}


@dataclass
class PolicyInput:
    """A validated observation batch as tensors on the policy's device."""

    images: dict[str, torch.Tensor]  # camera -> (B, 3, H, W) float in [0, 1]
    state: torch.Tensor  # (B, S) normalized
    tasks: list[str]  # (B,)

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])


class TrunkFeatures(NamedTuple):
    """Trunk outputs: one token per action query, and the pooled feature the value head reads."""

    action_tokens: torch.Tensor  # (B, h, D)
    pooled: torch.Tensor  # (B, D)


class Evaluation(NamedTuple):
    """One trunk pass for a policy-gradient update: per-step log-prob and entropy of given
    latents (sum over the steps for the chunk's), and the value."""

    step_log_prob: torch.Tensor  # (B, h)
    step_entropy: torch.Tensor  # (B, h)
    value: torch.Tensor | None  # (B,), None without a value head


# ---------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(name: str) -> Callable[[P], P]:
    """Class decorator: make a :class:`Policy` subclass loadable by ``name`` from checkpoints."""

    def deco(cls: P) -> P:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy type '{name}' is already registered by {_REGISTRY[name].__qualname__}")
        if not hasattr(cls, "config_class"):
            raise TypeError(f"{cls.__qualname__} must set the class attribute config_class")
        cls.policy_type = name
        _REGISTRY[name] = cls
        return cls

    return deco


BUILTIN_POLICY_MODULES = ("vla_rft.policies.vla",)
# Types whose module is imported only when a checkpoint or caller names them: the LeRobot
# adapter pulls in lerobot's policy stack, which listing or loading other types never needs.
LAZY_POLICY_MODULES = {"lerobot": "vla_rft.policies.lerobot.adapter"}


def _register_builtins(name: str | None = None) -> None:
    """Import the built-in policy modules (their decorators fill the registry), and the
    module of ``name`` if it is a lazily registered type."""
    import importlib

    for module in BUILTIN_POLICY_MODULES:
        importlib.import_module(module)
    if name in LAZY_POLICY_MODULES and name not in _REGISTRY:
        importlib.import_module(LAZY_POLICY_MODULES[name])


def available_policies() -> list[str]:
    """Every policy type: registered ones and built-in ones imported on first use."""
    _register_builtins()
    return sorted(set(_REGISTRY) | set(LAZY_POLICY_MODULES))


def policy_class(name: str) -> type[Policy]:
    """The registered class for ``name``; unknown names get a "did you mean"."""
    _register_builtins(name)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown policy type '{name}'{hint}; registered: {', '.join(available_policies())}")
    return _REGISTRY[name]


# ---------------------------------------------------------------------------------- helpers
def _as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def _task_list(tasks: Any, batch: int) -> list[str]:
    if isinstance(tasks, str):
        return [tasks] * batch
    tasks = [str(t) for t in tasks]
    if len(tasks) != batch:
        raise ContractError(f"'{TASK_KEY}' has {len(tasks)} instructions for a batch of {batch}")
    return tasks


class Policy(nn.Module, ABC):
    """Base class: subclasses build a trunk (:meth:`features`), set ``self.head`` and
    optionally ``self.value_net``; the base class turns those into the RL/BC interface."""

    policy_type: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, normalizer: Normalizer) -> None:
        super().__init__()
        self.config = config
        spec = self.spec
        if (normalizer.state_dim, normalizer.action_dim) != (spec.state_dim, spec.action_dim):
            raise UserInputError(f"normalizer is for state/action dims ({normalizer.state_dim}, "
                                 f"{normalizer.action_dim}), the policy for ({spec.state_dim}, {spec.action_dim})")
        self.normalizer = normalizer
        self.head: ActionHead
        self.value_net: nn.Module | None = None
        self.critic: nn.Module | None = None  # a chunk critic (vla_rft.policies.critic), from chunked TD

    # ----------------------------------------------------------------- subclass hooks
    @property
    @abstractmethod
    def spec(self) -> PolicySpec:
        """Cameras, image size, state/action dims and chunk size (from the config)."""

    @abstractmethod
    def features(self, inp: PolicyInput, *, augment: bool = False) -> TrunkFeatures:
        """Run the trunk; ``augment`` applies training-time image augmentation."""

    # ----------------------------------------------------------------- observations
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def validate(self, obs: Obs) -> None:
        """Raise :class:`ContractError` if ``obs`` is not a batch this policy can read."""
        spec = self.spec
        validate_observation(obs, cameras=spec.cameras, state_dim=spec.state_dim, batched=True)
        for cam in spec.cameras:
            hw = tuple(obs[IMAGE_PREFIX + cam].shape[1:3])
            if hw != tuple(spec.image_size):
                raise ContractError(f"camera '{cam}' gives {hw[0]}x{hw[1]} images, the policy was built for "
                                    f"{spec.image_size[0]}x{spec.image_size[1]}")
        if TASK_KEY not in obs:
            raise ContractError(f"observation is missing '{TASK_KEY}' (the instruction)")

    def prepare(self, obs: Obs) -> PolicyInput:
        """Validate a contract batch and convert it to normalized tensors."""
        self.validate(obs)
        dev = self.device
        images = {cam: _as_tensor(obs[IMAGE_PREFIX + cam], dev).permute(0, 3, 1, 2).float().div_(255.0)
                  for cam in self.spec.cameras}  # (B, 3, H, W)
        state = self.normalizer.normalize_state(_as_tensor(obs[STATE_KEY], dev).float())  # (B, S)
        return PolicyInput(images=images, state=state, tasks=_task_list(obs[TASK_KEY], state.shape[0]))

    def _latent(self, x: Any, batch: int) -> torch.Tensor:
        """A (B, h, A) env-unit chunk or a (B, L, h, A) normalized latent -> latent."""
        spec, t = self.spec, _as_tensor(x, self.device).float()
        if t.shape[-1] != spec.action_dim:
            raise ContractError(f"chunk has action dimension {t.shape[-1]}, the policy's is {spec.action_dim}")
        if t.ndim == 3 and tuple(t.shape) == (batch, spec.chunk_size, spec.action_dim):
            return self.head.latent_from_chunk(self.normalizer.normalize_action(t))
        want = (batch, self.head.latent_steps, spec.chunk_size, spec.action_dim)
        if t.ndim == 4 and tuple(t.shape) == want:
            return t
        raise ContractError(f"expected a chunk {(batch, spec.chunk_size, spec.action_dim)} or a latent {want}, "
                            f"got {tuple(t.shape)}")

    # ----------------------------------------------------------------- the interface
    def act(self, obs: Obs, deterministic: bool = True, generator: torch.Generator | None = None) -> np.ndarray:
        """Chunks (B, h, A) float32 in env units, clipped to [-1, 1]: what the executor plays."""
        with torch.inference_mode():
            feats = self.features(self.prepare(obs))
            tokens = feats.action_tokens
            n = int(getattr(self.config, "best_of_n", 0) or 0)
            if n > 0 and self.critic is not None:  # Q-chunking's QC actor; deterministic: a fixed sample stream
                from vla_rft.policies.critic import best_of_n

                gen = generator if not deterministic or generator is not None else \
                    torch.Generator(device=tokens.device).manual_seed(0)
                chunk_n = best_of_n(self.head, self.critic, tokens, feats.pooled, n, gen)
            elif deterministic:
                chunk_n = self.head.mode(tokens)
            else:
                chunk_n = self.head.chunk_of(self.head.sample(tokens, generator)[0])
            return self.normalizer.unnormalize_action(chunk_n).clamp(-1.0, 1.0).cpu().numpy()

    def sample(self, obs: Obs, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(chunk (B, h, A) env units unclipped, log_prob (B,) normalized space); differentiable."""
        latent, logp = self.sample_latent(obs, generator)
        return self.latent_to_chunk(latent), logp

    def sample_latent(self, obs: Obs, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent (B, L, h, A) normalized, log_prob (B,)): what RL code stores for any head."""
        latent, step_logp = self.head.sample(self.features(self.prepare(obs)).action_tokens, generator)
        return latent, step_logp.sum(dim=-1)

    def latent_to_chunk(self, latent: torch.Tensor) -> torch.Tensor:
        """The env-unit chunk (B, h, A), unclipped, that a latent ends in."""
        return self.normalizer.unnormalize_action(self.head.chunk_of(latent))

    def log_prob(self, obs: Obs, chunk: Any) -> torch.Tensor:
        """log pi (B,) of an env-unit chunk (B, h, A) or a latent (B, L, h, A) from :meth:`sample_latent`."""
        inp = self.prepare(obs)
        return self.head.log_prob(self.features(inp).action_tokens, self._latent(chunk, inp.batch_size))

    def entropy(self, obs: Obs) -> torch.Tensor:
        """Entropy (B,) of the head's Gaussians (normalized space; per Euler step for flow)."""
        return self.head.entropy(self.features(self.prepare(obs)).action_tokens)

    def value(self, obs: Obs) -> torch.Tensor:
        """V(o) (B,) from the value MLP on the pooled trunk feature (shared actor-critic)."""
        return self._value_of(self.features(self.prepare(obs)).pooled)

    def _value_of(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.value_net is None:
            raise ConfigError(f"this '{self.policy_type}' policy was built without a value head (value_head: false)")
        return self.value_net(pooled).squeeze(-1)

    def evaluate(self, obs: Obs, chunk: Any) -> Evaluation:
        """log_prob, entropy and value (if any) of given chunks/latents in one trunk pass."""
        inp = self.prepare(obs)
        feats = self.features(inp)
        latent = self._latent(chunk, inp.batch_size)
        value = self._value_of(feats.pooled) if self.value_net is not None else None
        return Evaluation(self.head.step_log_prob(feats.action_tokens, latent), self.head.step_entropy(feats.action_tokens),
                          value)

    def bc_loss(self, batch: Obs, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked imitation loss on a :class:`~vla_rft.data.chunks.ChunkWindows` batch
        (``action`` (B, h, A) env units, ``action_is_pad`` (B, h)); images are augmented when
        the module is in training mode and its config asks for it."""
        inp = self.prepare(batch)
        feats = self.features(inp, augment=self.training)
        spec = self.spec
        action = _as_tensor(batch[ACTION_KEY], self.device).float()
        if tuple(action.shape[1:]) != (spec.chunk_size, spec.action_dim):
            raise ContractError(f"expert chunks are {tuple(action.shape[1:])}, the policy emits "
                                f"{(spec.chunk_size, spec.action_dim)}")
        target = self.normalizer.normalize_action(action, clip=True)
        mask = ~_as_tensor(batch["action_is_pad"], self.device).bool()  # (B, h)
        loss, metrics = self.head.bc_loss(feats.action_tokens, target, mask, generator)
        return loss, {"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}

    # ----------------------------------------------------------------- bookkeeping
    def check_compatible(self, *, cameras: list[str] | None = None, state_dim: int | None = None,
                         action_dim: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        """Raise :class:`ContractError` if an environment providing these cannot run the policy."""
        spec = self.spec
        if cameras is not None:
            missing = [c for c in spec.cameras if c not in cameras]
            if missing:
                raise ContractError(f"missing camera '{missing[0]}': the policy needs {spec.cameras}, "
                                    f"the environment provides {sorted(cameras)}")
        for what, mine, theirs in (("state", spec.state_dim, state_dim), ("action", spec.action_dim, action_dim)):
            if theirs is not None and int(theirs) != mine:
                raise ContractError(f"wrong {what} dimension: the policy uses {mine}, the environment {theirs}")
        if image_size is not None and tuple(image_size) != tuple(spec.image_size):
            raise ContractError(f"the policy was built for {tuple(spec.image_size)} images, the environment gives "
                                f"{tuple(image_size)}")

    def num_parameters(self, trainable_only: bool = True) -> int:
        """Parameter count (the frozen text encoder lives outside the module and is not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``policy`` (trunk + head means), ``noise`` (exploration scale), ``value`` (value MLP, chunk critic):
        the groups RL recipes give different learning rates (RL4VLA, VLA-RFT)."""
        noise = {id(p) for p in self.head.noise_parameters()}
        value = {id(p) for p in self.value_net.parameters()} if self.value_net is not None else set()
        if self.critic is not None:  # critics learn at the value rate
            value |= {id(p) for p in self.critic.parameters()}
        groups: dict[str, list[nn.Parameter]] = {"policy": [], "noise": [], "value": []}
        for p in self.parameters():
            groups["noise" if id(p) in noise else "value" if id(p) in value else "policy"].append(p)
        return groups

    def checkpoint_config(self) -> dict[str, Any]:
        return {"policy_type": self.policy_type, "policy_format": POLICY_FORMAT, "model": to_dict(self.config)}

    def to_checkpoint(self, tensors: dict[str, torch.Tensor] | None = None, **fields: Any) -> Checkpoint:
        """A :class:`Checkpoint` of this policy (``tensors``: other weights under the same names,
        e.g. an EMA or LoRA-merged export); ``fields`` are the optional Checkpoint fields (step,
        counters, optimizer, rng, extra) a trainer adds."""
        return Checkpoint(kind=POLICY_KIND, config=self.checkpoint_config(),
                          tensors=dict(self.state_dict() if tensors is None else tensors),
                          normalizer=self.normalizer.to_dict(), **fields)

    def save(self, directory: str | os.PathLike, tensors: dict[str, torch.Tensor] | None = None,
             **fields: Any) -> Path:
        """Write a policy checkpoint directory (atomic); see :meth:`to_checkpoint`."""
        return save_checkpoint(self.to_checkpoint(tensors, **fields), directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, **expect: Any) -> Policy:
        """:func:`load_policy`, also checking that the checkpoint holds this class."""
        policy = load_policy(directory, **expect)
        if not isinstance(policy, cls):
            raise CheckpointError(f"checkpoint '{directory}' holds a '{policy.policy_type}' policy, not {cls.__name__}")
        return policy


# ---------------------------------------------------------------------------------- loading
def make_policy(policy_type: str, config: Any, normalizer: Normalizer) -> Policy:
    """Instantiate a registered policy type."""
    return policy_class(policy_type)(config, normalizer)


def load_policy_preset(name_or_path: str) -> tuple[str, Any]:
    """(policy_type, config) from ``configs/policy/<name>.yaml`` (or a YAML path).

    The YAML holds the config's fields and optionally ``type`` (default ``vla``).
    """
    import yaml

    try:
        path = resolve_preset(name_or_path, group="policy")
    except ConfigError:
        names = sorted(p.stem for p in (CONFIGS_DIR / "policy").glob("*.yaml"))
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"policy preset '{name_or_path}' not found{hint}; presets: {', '.join(names)}, "
                          "or a YAML path") from None
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"policy preset '{path}' must be a YAML mapping")
    policy_type = str(data.pop("type", "vla"))
    return policy_type, from_dict(policy_class(policy_type).config_class, data)


def policy_from_checkpoint(ckpt: Checkpoint, where: str = "checkpoint") -> Policy:
    """Rebuild a policy from a loaded :class:`Checkpoint` of kind ``policy``."""
    if ckpt.kind != POLICY_KIND:
        raise CheckpointError(f"{where} holds a '{ckpt.kind}', expected a '{POLICY_KIND}'")
    cfg = ckpt.config
    if cfg.get("policy_format") != POLICY_FORMAT or "policy_type" not in cfg or "model" not in cfg:
        raise CheckpointError(f"{where}: config.json is not a policy config of format {POLICY_FORMAT} "
                              f"(has keys {sorted(cfg)})")
    try:
        cls = policy_class(str(cfg["policy_type"]))
        model_cfg = from_dict(cls.config_class, cfg["model"])
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from e
    if ckpt.normalizer is None:
        raise CheckpointError(f"{where} has no normalizer.json: refusing to run a policy without its "
                              "normalization statistics")
    policy = cls(model_cfg, Normalizer.from_dict(ckpt.normalizer, where=f"{where}/normalizer.json"))
    try:
        policy.load_state_dict(ckpt.tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not match the stored config ({str(e).splitlines()[0]})") from e
    return policy.eval()


PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "assets" / "policies"
"""Policies shipped inside the package (a few MB each), loadable as ``pretrained:<name>``."""


def pretrained_names() -> list[str]:
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "meta.json").is_file()) if PRETRAINED_DIR.is_dir() else []


def resolve_pretrained(path: str | os.PathLike) -> str | os.PathLike:
    """``pretrained:<name>`` -> the shipped checkpoint directory (other paths unchanged)."""
    if not str(path).startswith("pretrained:"):
        return path
    name = str(path).removeprefix("pretrained:")
    if name not in pretrained_names():
        raise CheckpointError(f"no shipped policy '{name}'; shipped: {', '.join(pretrained_names()) or 'none'}")
    return PRETRAINED_DIR / name


def load_policy(path: str | os.PathLike, *, cameras: list[str] | None = None, state_dim: int | None = None,
                action_dim: int | None = None, image_size: tuple[int, int] | None = None,
                device: str = "cpu") -> Policy:
    """Load a policy checkpoint (in eval mode) and check it against the caller's environment.

    ``path`` may also be a LeRobot ``save_pretrained`` directory (a ``config.json`` with a
    ``"type"`` and no ``meta.json``) or ``lerobot:DIR``: see :mod:`vla_rft.policies.lerobot.adapter`.

    Raises :class:`CheckpointError` for a missing/corrupt checkpoint, one of another kind, an
    unknown policy type or missing normalization statistics, and :class:`ContractError` when
    the environment lacks a camera or has another state/action dimension or image size.
    """
    from vla_rft.policies.lerobot import is_lerobot_pretrained_dir

    path = resolve_pretrained(path)
    if is_lerobot_pretrained_dir(path):  # a LeRobot save_pretrained directory, or "lerobot:DIR"
        from vla_rft.policies.lerobot.adapter import load_lerobot_pretrained

        policy: Policy = load_lerobot_pretrained(path, device=device)
    else:
        policy = policy_from_checkpoint(load_checkpoint(path, kind=POLICY_KIND, device=device), f"checkpoint '{path}'")
    policy.check_compatible(cameras=cameras, state_dim=state_dim, action_dim=action_dim, image_size=image_size)
    return policy.to(device)
