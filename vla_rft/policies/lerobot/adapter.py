"""LeRobot policies (ACT, Diffusion) behind the project's :class:`~vla_rft.policies.base.Policy` interface.

Two ways in, both offline (``HF_HUB_OFFLINE=1``; the hub is never consulted):

- **A LeRobot pretrained directory** (what ``policy.save_pretrained(d)`` plus
  ``preprocessor.save_pretrained(d)`` / ``postprocessor.save_pretrained(d)`` write:
  ``config.json`` with a ``"type"``, ``model.safetensors``, ``policy_preprocessor.json``,
  ``policy_postprocessor.json`` and their ``*.safetensors`` statistics).
  :func:`load_lerobot_pretrained` reads it with LeRobot's own loaders
  (``PreTrainedPolicy.from_pretrained`` with ``strict=True``, ``make_pre_post_processors``).
  :func:`vla_rft.policies.base.load_policy` routes such a directory here when it has a
  ``config.json`` with a ``"type"`` and no vla-rft ``meta.json``, or when the path is written
  ``lerobot:DIR`` (which forces it and reports LeRobot-specific errors).
- **A vla-rft checkpoint of policy type ``lerobot``** (an adapted policy after fine-tuning,
  ``policy.save(dir)``): the LeRobot config and both processor pipelines (with their
  statistics inlined) are JSON text in ``config.json``, every weight (LeRobot's, the exploration
  log-std, the value head) is in ``model.safetensors``. No pickle.

Normalization: LeRobot 0.4 keeps it in processor pipelines, not in the model. Observations go
through the saved *preprocessor* (state and image normalization, device, batching) before the
wrapped model; the model's raw output is a chunk in LeRobot's normalized action space. The
*postprocessor* maps that to env units; every supported mode (MEAN_STD, MIN_MAX, QUANTILES,
IDENTITY) is a per-dimension affine map, so it is mirrored exactly into the base class's
:class:`Normalizer` (``action_low/high`` = postprocessor(-1/+1)), measured by probing the
postprocessor and verified to be affine; a pipeline that is not is refused. That keeps the base
class's action semantics unchanged: ``act`` is env units, ``log_prob`` is in LeRobot's
normalized space. The Normalizer's state statistics are the identity because the
preprocessor normalizes the state itself.

RL: ACT and (seeded) Diffusion give one chunk per observation, so a learnable Gaussian
(:class:`ExplorationHead`, state-independent log-std per (step, dim), normalized space) is put
around that chunk; ``sample``/``log_prob``/``entropy``/``evaluate`` then behave like the
built-in VLA's Gaussian head and PPO/GRPO gradients flow into the LeRobot weights. ``value``
reads a small MLP on the wrapped model's features (ACT: the decoder output at the first
action query; Diffusion: the global conditioning vector).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vla_rft.checkpoint import CheckpointError
from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, TASK_KEY, ContractError
from vla_rft.policies.base import (
    Obs,
    Policy,
    PolicyInput,
    PolicySpec,
    TrunkFeatures,
    _as_tensor,
    register_policy,
)
from vla_rft.policies.heads import GaussianChunkHead, gaussian_log_density
from vla_rft.policies.lerobot import LEROBOT_CONFIG, strip_prefix
from vla_rft.policies.normalizer import Normalizer

if TYPE_CHECKING:
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.pretrained import PreTrainedPolicy
    from lerobot.processor import PolicyProcessorPipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LEROBOT_WEIGHTS = "model.safetensors"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
SUPPORTED_TYPES = ("act", "diffusion")
NEEDS_HUB = {"smolvla": "a SmolVLM backbone", "pi0": "a PaliGemma backbone", "pi05": "a PaliGemma backbone",
             "pi0_fast": "a PaliGemma backbone", "groot": "a GR00T backbone", "xvla": "a Florence backbone"}
_MIN_ACTION_SCALE = 1e-6  # a dimension LeRobot treats as constant (std or range 0) keeps a tiny scale


@dataclass
class LeRobotAdapterConfig:
    """A LeRobot policy wrapped for RL; the LeRobot parts are stored verbatim as JSON text
    (LeRobot owns their schema, and vla-rft's config checker only knows flat dataclass keys)."""

    lerobot_type: str = "act"
    """LeRobot policy type (the "type" of its config.json): act or diffusion."""
    lerobot_config: str = "{}"
    """LeRobot's config.json, as JSON text."""
    preprocessor: str = "{}"
    """LeRobot's policy_preprocessor.json with each step's state (statistics) inlined, as JSON text."""
    postprocessor: str = "{}"
    """LeRobot's policy_postprocessor.json with each step's state inlined, as JSON text."""
    init_log_std: float = -1.0
    """Initial log-std of the exploration Gaussian, in LeRobot's normalized action units."""
    value_head: bool = True
    """Build a value MLP on the wrapped model's features (shared actor-critic)."""
    sampler_seed: int = 0
    """Seed of the initial and per-step noise of a diffusion sampler, so its chunk is a function of the observation."""
    source: str = ""
    """The LeRobot directory this policy was first loaded from (provenance only)."""


# ------------------------------------------------------------------------------ LeRobot config
def _check_type(policy_type: str, where: str) -> None:
    if policy_type in SUPPORTED_TYPES:
        return
    why = (f"it needs {NEEDS_HUB[policy_type]} from the Hugging Face hub, which is not available offline, "
           "and the adapter has no backend for it" if policy_type in NEEDS_HUB else "the adapter has no backend for it")
    raise CheckpointError(f"{where}: LeRobot policy type '{policy_type}' is not supported ({why}); "
                          f"supported: {', '.join(SUPPORTED_TYPES)}")


def _lerobot_config_from_json(text: str, device: str) -> PreTrainedConfig:
    """Parse LeRobot's config.json with LeRobot's own parser (through a temporary file, its
    only entry point). Torchvision backbone weights are switched off: the checkpoint holds
    every weight, and fetching ImageNet weights would need the network."""
    from lerobot.configs.policies import PreTrainedConfig

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, LEROBOT_CONFIG).write_text(text)
        cfg = PreTrainedConfig.from_pretrained(tmp)
    if hasattr(cfg, "pretrained_backbone_weights"):
        cfg.pretrained_backbone_weights = None
    cfg.device = device
    return cfg


def _features_spec(cfg: PreTrainedConfig, where: str) -> tuple[list[str], tuple[int, int], int, int]:
    """(cameras, (H, W), state_dim, action_dim) of a LeRobot config, mapped onto the contract."""
    cameras, sizes = [], set()
    for key, feat in cfg.image_features.items():
        if not key.startswith(IMAGE_PREFIX):
            raise CheckpointError(f"{where}: image input '{key}' is not a contract camera "
                                  f"('{IMAGE_PREFIX}<camera>'); retrain or rename the feature")
        cameras.append(key[len(IMAGE_PREFIX):])
        sizes.add(tuple(int(s) for s in feat.shape[1:]))
    if cfg.env_state_feature is not None:
        raise CheckpointError(f"{where}: the policy reads 'observation.environment_state', which the contract lacks")
    if cfg.robot_state_feature is None or not cameras:
        raise CheckpointError(f"{where}: the contract needs a policy reading '{STATE_KEY}' and at least one camera")
    if len(sizes) != 1:
        raise CheckpointError(f"{where}: cameras have different image sizes {sorted(sizes)}")
    if cfg.action_feature is None:
        raise CheckpointError(f"{where}: the policy has no '{ACTION_KEY}' output")
    return cameras, sizes.pop(), int(cfg.robot_state_feature.shape[0]), int(cfg.action_feature.shape[0])


# ------------------------------------------------------------------------------ processors
def _pipeline_kind(kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    from lerobot.processor.converters import (
        batch_to_transition,
        policy_action_to_transition,
        transition_to_batch,
        transition_to_policy_action,
    )

    if kind == "pre":
        return batch_to_transition, transition_to_batch
    return policy_action_to_transition, transition_to_policy_action


def load_pipeline(directory: Path, filename: str, kind: str) -> PolicyProcessorPipeline:
    """A saved LeRobot processor pipeline (LeRobot's loader; local files only)."""
    from lerobot.processor import PolicyProcessorPipeline

    if not (directory / filename).is_file():
        raise CheckpointError(f"LeRobot directory '{directory}' has no {filename}: LeRobot 0.4 keeps normalization "
                              "in processor pipelines, save them with preprocessor.save_pretrained(dir) and "
                              "postprocessor.save_pretrained(dir); refusing to guess the statistics")
    to_transition, to_output = _pipeline_kind(kind)
    return PolicyProcessorPipeline.from_pretrained(str(directory), config_filename=filename, local_files_only=True,
                                                   to_transition=to_transition, to_output=to_output)


def pipeline_to_json(pipeline: PolicyProcessorPipeline) -> str:
    """The pipeline's config JSON with each step's state tensors inlined (dtype, shape, values)."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        pipeline.save_pretrained(tmp, config_filename="pipeline.json")
        data = json.loads(Path(tmp, "pipeline.json").read_text())
        for step in data["steps"]:
            if "state_file" in step:
                tensors = load_file(str(Path(tmp, step.pop("state_file"))))
                step["state"] = {k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                                     "values": t.flatten().tolist()} for k, t in sorted(tensors.items())}
    return json.dumps(data, sort_keys=True)


def pipeline_from_json(text: str, kind: str) -> PolicyProcessorPipeline:
    """Inverse of :func:`pipeline_to_json`, through LeRobot's own loader."""
    from safetensors.torch import save_file

    data = json.loads(text)
    with tempfile.TemporaryDirectory() as tmp:
        for i, step in enumerate(data["steps"]):
            if "state" in step:
                state = step.pop("state")
                tensors = {k: torch.tensor(v["values"], dtype=getattr(torch, v["dtype"])).reshape(v["shape"])
                           for k, v in state.items()}
                step["state_file"] = f"step_{i}.safetensors"
                save_file(tensors, str(Path(tmp, step["state_file"])))
        Path(tmp, "pipeline.json").write_text(json.dumps(data))
        return load_pipeline(Path(tmp), "pipeline.json", kind)


def _check_statistics(pipeline: PolicyProcessorPipeline, where: str) -> None:
    """LeRobot's (un)normalizer silently passes a feature through when its statistics are
    missing; a policy fed unnormalized inputs still acts, just wrongly. Refuse instead."""
    from lerobot.configs.types import NormalizationMode

    for step in pipeline.steps:
        if not (hasattr(step, "norm_map") and hasattr(step, "features")):
            continue
        stats = step.stats or {}
        for key, feat in step.features.items():
            mode = step.norm_map.get(feat.type, NormalizationMode.IDENTITY)
            if mode != NormalizationMode.IDENTITY and key not in stats:
                raise CheckpointError(f"{where}: {pipeline.name} normalizes '{key}' with {mode.value} but has no "
                                      "statistics for it; refusing to run a policy without them")


def action_normalizer(post: PolicyProcessorPipeline, state_dim: int, action_dim: int, where: str) -> Normalizer:
    """Mirror the postprocessor's per-dimension affine map f(z) = offset + scale * z as a
    :class:`Normalizer` (f(-1) = action_low, f(1) = action_high), after checking at a third
    point that it is affine. State statistics are the identity: the preprocessor owns them."""
    with torch.no_grad():
        probe = {z: post(torch.full((1, action_dim), z)).reshape(action_dim).double().numpy() for z in (0.0, 1.0, -2.5)}
    offset, scale = probe[0.0], probe[1.0] - probe[0.0]
    if not np.allclose(probe[-2.5], offset - 2.5 * scale, rtol=1e-4, atol=1e-5):
        raise CheckpointError(f"{where}: the postprocessor is not a per-dimension affine map of the model's output; "
                              "the adapter can only mirror affine action normalization")
    if np.any(scale < 0):
        raise CheckpointError(f"{where}: the postprocessor flips action dimensions {np.flatnonzero(scale < 0).tolist()}")
    scale = np.maximum(scale, _MIN_ACTION_SCALE)
    return Normalizer(state_mean=np.zeros(state_dim), state_std=np.ones(state_dim),
                      action_low=offset - scale, action_high=offset + scale)


# ------------------------------------------------------------------------------ heads and backends
class ExplorationHead(GaussianChunkHead):
    """A Gaussian around a deterministic policy's chunk: the mean *is* the wrapped policy's
    normalized chunk (identity), the log-std a learned (h, A) parameter (BC's L1 + detached
    NLL is :class:`GaussianChunkHead`'s).

    ``active`` (A,) marks the action dimensions the postprocessor does not collapse: where
    LeRobot's statistics say a dimension is constant (std or range 0) it outputs that constant
    whatever the model says, so those dimensions carry no randomness here either (sampled at
    the mean, left out of log-prob and entropy) instead of an ill-conditioned density."""

    def __init__(self, chunk_size: int, action_dim: int, *, init_log_std: float, active: torch.Tensor) -> None:
        super().__init__(action_dim, chunk_size, action_dim, init_log_std=init_log_std, loss="l1")
        self.mean = nn.Identity()
        self.register_buffer("active", active.to(torch.float32).reshape(action_dim), persistent=False)

    def sample(self, tokens: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = self._log_std()
        eps = torch.randn(tokens.shape, generator=generator, dtype=tokens.dtype, device=tokens.device)
        chunk = tokens + eps * torch.exp(log_std) * self.active  # (B, h, A)
        return chunk[:, None], self._density(chunk, tokens, log_std)

    def step_log_prob(self, tokens: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return self._density(latent[:, -1], tokens, self._log_std())

    def _density(self, chunk: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """Per-step log-density (B, h) over the active dims."""
        return (gaussian_log_density(chunk, mean, log_std) * self.active).sum(dim=-1)

    def step_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        per_dim = (0.5 + 0.5 * math.log(2 * math.pi) + self._log_std()) * self.active  # (h, A)
        return per_dim.sum(dim=-1).expand(tokens.shape[0], -1)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout, ACT without its training-only VAE encoder)
    while gradients still flow: log-probs must not change between PPO's rollout and update."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _act_chunk(wrapped: PreTrainedPolicy, batch: dict[str, Any], horizon: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ACT's normalized chunk (B, h, A) and its first action query's decoder output (B, D).
    Same computation as ``ACTPolicy.predict_action_chunk`` without its ``no_grad``."""
    from lerobot.utils.constants import OBS_IMAGES

    batch = dict(batch)
    batch[OBS_IMAGES] = [batch[key] for key in wrapped.config.image_features]
    captured: dict[str, torch.Tensor] = {}
    hook = wrapped.model.action_head.register_forward_pre_hook(lambda _m, args: captured.update(tokens=args[0]))
    try:
        actions, _ = wrapped.model(batch)  # (B, chunk_size, A)
    finally:
        hook.remove()
    return actions[:, :horizon], captured["tokens"][:, 0]


def _diffusion_chunk(wrapped: PreTrainedPolicy, batch: dict[str, Any], horizon: int,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusion's normalized chunk (B, h, A) and its global conditioning (B, D).

    The observation is repeated ``n_obs_steps`` times (what LeRobot's own queue does on an
    episode's first step: this interface has no per-env history). The sampler's initial noise
    (shared by every row) and its per-step noise come from a generator seeded with
    ``sampler_seed``, so the chunk is a function of the observation. Each row runs its own sampler
    from that seed (a DDPM scheduler draws its per-step noise for the whole batch at once, which
    would make a row depend on the batch size, and PPO's first ratio differ from 1)."""
    from lerobot.utils.constants import OBS_IMAGES, OBS_STATE

    cfg, model = wrapped.config, wrapped.diffusion
    b, n = batch[OBS_STATE].shape[0], cfg.n_obs_steps
    obs = {OBS_STATE: batch[OBS_STATE][:, None].expand(-1, n, -1)}  # (B, n, S)
    images = torch.stack([batch[key] for key in cfg.image_features], dim=1)  # (B, N, C, H, W)
    obs[OBS_IMAGES] = images[:, None].expand(-1, n, *images.shape[1:])  # (B, n, N, C, H, W)
    cond = model._prepare_global_conditioning(obs)  # (B, D)
    shape = (1, cfg.horizon, cfg.action_feature.shape[0])
    rows = []
    for i in range(b):  # one sampler per row, each from the same seed: a row never depends on the batch
        gen = torch.Generator(device=cond.device).manual_seed(seed)
        noise = torch.randn(shape, generator=gen, device=cond.device)
        rows.append(model.conditional_sample(1, global_cond=cond[i:i + 1], generator=gen, noise=noise))
    actions = torch.cat(rows)
    start = n - 1
    return actions[:, start:start + horizon], cond


def _feature_dim(wrapped: PreTrainedPolicy) -> int:
    cfg = wrapped.config
    if cfg.type == "act":
        return int(cfg.dim_model)
    per_step = cfg.robot_state_feature.shape[0] + wrapped.diffusion.rgb_encoder.feature_dim * len(cfg.image_features)
    return int(per_step * cfg.n_obs_steps)


BACKENDS: dict[str, Callable[[Any, dict[str, Any], int, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "act": _act_chunk,
    "diffusion": _diffusion_chunk,
}


# ------------------------------------------------------------------------------ the policy
@register_policy("lerobot")
class LeRobotPolicy(Policy):
    """A LeRobot ACT/Diffusion policy with an exploration Gaussian and a value head."""

    config_class = LeRobotAdapterConfig

    def __init__(self, config: LeRobotAdapterConfig, normalizer: Normalizer, *,
                 wrapped: PreTrainedPolicy | None = None,
                 processors: tuple[PolicyProcessorPipeline, PolicyProcessorPipeline] | None = None) -> None:
        """Build from ``config`` alone (weights then come from ``load_state_dict``), or around an
        already loaded LeRobot policy and its processors (:func:`load_lerobot_pretrained`)."""
        where = f"LeRobot policy '{config.source or config.lerobot_type}'"
        _check_type(config.lerobot_type, where)
        self._lr_config = wrapped.config if wrapped is not None else _lerobot_config_from_json(config.lerobot_config, "cpu")
        self._lr_spec = _features_spec(self._lr_config, where)
        super().__init__(config, normalizer)
        if wrapped is None:
            from lerobot.policies.factory import get_policy_class

            wrapped = get_policy_class(config.lerobot_type)(self._lr_config)
        self.wrapped = wrapped
        pre, post = processors or (pipeline_from_json(config.preprocessor, "pre"),
                                   pipeline_from_json(config.postprocessor, "post"))
        for pipeline in (pre, post):
            _check_statistics(pipeline, where)
        self.preprocessor, self.postprocessor = pre, post
        self._check_normalizer(where)
        spec = self.spec
        half_range = torch.from_numpy((normalizer.action_high - normalizer.action_low) / 2)
        self.head = ExplorationHead(spec.chunk_size, spec.action_dim, init_log_std=config.init_log_std,
                                    active=half_range > 2 * _MIN_ACTION_SCALE)
        d = _feature_dim(wrapped)
        self.value_net = (nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 256), nn.GELU(), nn.Linear(256, 1))
                          if config.value_head else None)

    def _check_normalizer(self, where: str) -> None:
        """The stored action mirror must equal the postprocessor's map (e.g. neither edited)."""
        spec = self.spec
        mirror = action_normalizer(self.postprocessor, spec.state_dim, spec.action_dim, where)
        for name in ("action_low", "action_high"):
            if not np.allclose(getattr(mirror, name), getattr(self.normalizer, name), rtol=1e-4, atol=1e-5):
                raise CheckpointError(f"{where}: normalizer.json's {name} does not match the LeRobot postprocessor")
        if not (np.all(self.normalizer.state_mean == 0) and np.all(self.normalizer.state_std == 1)):
            raise CheckpointError(f"{where}: a LeRobot policy's normalizer must have identity state statistics "
                                  "(its preprocessor normalizes the state)")

    @property
    def spec(self) -> PolicySpec:
        cameras, (h, w), state_dim, action_dim = self._lr_spec
        cfg = self._lr_config
        return PolicySpec(cameras=cameras, image_size=(h, w), state_dim=state_dim, action_dim=action_dim,
                          chunk_size=int(cfg.n_action_steps),
                          extra={"policy_type": "lerobot", "lerobot_type": cfg.type,
                                 "n_obs_steps": int(cfg.n_obs_steps), "head": "gaussian (exploration)"})

    def features(self, inp: PolicyInput, *, augment: bool = False) -> TrunkFeatures:
        """Preprocess with LeRobot's pipeline, run the wrapped model (eval mode, with gradients).
        ``augment`` is ignored: LeRobot policies configure their own training augmentation."""
        batch: dict[str, Any] = {IMAGE_PREFIX + cam: img for cam, img in inp.images.items()}
        batch[STATE_KEY] = inp.state  # raw: the identity state statistics left it untouched
        batch[TASK_KEY] = inp.tasks
        batch = self.preprocessor(batch)
        dev = self.device
        batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with _eval_mode(self.wrapped):
            chunk, pooled = BACKENDS[self.config.lerobot_type](self.wrapped, batch, self.spec.chunk_size,
                                                               self.config.sampler_seed)
        return TrunkFeatures(action_tokens=chunk, pooled=pooled)

    def bc_loss(self, batch: Obs, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The base class's masked BC loss without clipping the targets: LeRobot's normalized
        action space (e.g. MEAN_STD z-scores) is not bounded to [-1, 1]."""
        inp = self.prepare(batch)
        spec = self.spec
        action = _as_tensor(batch[ACTION_KEY], self.device).float()
        if tuple(action.shape[1:]) != (spec.chunk_size, spec.action_dim):
            raise ContractError(f"expert chunks are {tuple(action.shape[1:])}, the policy emits "
                                f"{(spec.chunk_size, spec.action_dim)}")
        mask = ~_as_tensor(batch["action_is_pad"], self.device).bool()  # (B, h)
        tokens = self.features(inp).action_tokens
        loss, metrics = self.head.bc_loss(tokens, self.normalizer.normalize_action(action), mask, generator)
        return loss, {"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}

    def lerobot_chunk(self, obs: Obs) -> np.ndarray:
        """The chunk LeRobot's own path gives (preprocessor -> model -> postprocessor), env
        units, unclipped: the reference ``act(deterministic=True)`` must reproduce."""
        with torch.inference_mode():
            normalized = self.features(self.prepare(obs)).action_tokens
            return self.postprocessor(normalized).cpu().numpy()


# ------------------------------------------------------------------------------ loading
def load_lerobot_pretrained(path: str | os.PathLike, *, device: str = "cpu", init_log_std: float = -1.0,
                            value_head: bool = True, sampler_seed: int = 0) -> LeRobotPolicy:
    """Wrap a LeRobot pretrained directory (``lerobot:`` prefix allowed) as a :class:`LeRobotPolicy`.

    Raises :class:`CheckpointError` for a missing directory/file, an unsupported type (SmolVLA,
    pi0: they need hub weights), inputs the contract cannot provide, missing statistics, or
    weights that do not match the config (``strict=True``: LeRobot's default silently skips).
    """
    from lerobot.policies.factory import get_policy_class

    directory, _ = strip_prefix(path)
    where = f"LeRobot directory '{directory}'"
    for name in (LEROBOT_CONFIG, LEROBOT_WEIGHTS):
        if not (directory / name).is_file():
            raise CheckpointError(f"{where} has no {name} (expected LeRobot's save_pretrained layout)")
    text = (directory / LEROBOT_CONFIG).read_text()
    policy_type = str(json.loads(text).get("type"))
    _check_type(policy_type, where)
    lr_cfg = _lerobot_config_from_json(text, device)
    _, _, state_dim, action_dim = _features_spec(lr_cfg, where)
    pre, post = load_pipeline(directory, PREPROCESSOR_FILE, "pre"), load_pipeline(directory, POSTPROCESSOR_FILE, "post")
    try:
        wrapped = get_policy_class(policy_type).from_pretrained(str(directory), config=lr_cfg, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not match its config.json ({str(e).splitlines()[0]})") from e
    config = LeRobotAdapterConfig(lerobot_type=policy_type, lerobot_config=text, preprocessor=pipeline_to_json(pre),
                                  postprocessor=pipeline_to_json(post), init_log_std=init_log_std,
                                  value_head=value_head, sampler_seed=sampler_seed, source=str(directory))
    normalizer = action_normalizer(post, state_dim, action_dim, where)
    policy = LeRobotPolicy(config, normalizer, wrapped=wrapped, processors=(pre, post))
    return policy.to(device).eval()
