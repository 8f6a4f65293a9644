"""An action-conditioned world model of the contract's observations, sized for a CPU.

Two parts (ALGORITHMS.md §3, the CPU-sized design):

- **Frame codec**, one per camera: a conv autoencoder from the policy's resolution (64 x 64) to a
  small latent grid (``latent_channels`` x H/8 x W/8, tanh-bounded) and back.
- **Dynamics at chunk level**: given the latent grids of every camera, the proprioceptive state
  and a whole action chunk (h, A), a residual conv net (FiLM-conditioned on state and chunk)
  predicts the latent grids and the state at the end of the chunk, and the logit that the task
  succeeds inside the chunk. The policy reads observations only at chunk boundaries, so frames
  are decoded only there.

The model steps in latent space: an imagined episode carries its predicted latents forward and
decodes them for the policy (see :mod:`world_models.source`). Checkpoints are the project's
(safetensors + JSON), kind ``world_model``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vla_rft.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

KIND = "world_model"


@dataclass
class WorldModelConfig:
    """Architecture of the world model; the interface fields are filled from the data."""

    cameras: list[str] = field(default_factory=list)
    """Cameras modelled (filled from the data)."""
    image_size: list[int] = field(default_factory=lambda: [64, 64])
    """Frame height and width (filled from the data)."""
    state_dim: int = 0
    """Proprioceptive state size (filled from the data)."""
    action_dim: int = 0
    """Action size (filled from the data)."""
    chunk_size: int = 8
    """h, the actions of one dynamics step (the policy's chunk length)."""
    latent_channels: int = 16
    """Channels of each camera's latent grid (the grid is H/8 x W/8)."""
    codec_channels: list[int] = field(default_factory=lambda: [32, 64, 96])
    """Encoder widths of the three stride-2 stages (the decoder mirrors them)."""
    dyn_channels: int = 128
    """Width of the dynamics' residual blocks."""
    dyn_blocks: int = 4
    """Residual blocks of the dynamics."""
    hidden: int = 256
    """Width of the condition MLP and of the state / success heads."""


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class FrameCodec(nn.Module):
    """Conv autoencoder of one camera: uint8-range frames <-> a tanh-bounded latent grid."""

    def __init__(self, channels: list[int], latent: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 4, 2, 1), _gn(c1), nn.SiLU(),
            nn.Conv2d(c1, c2, 4, 2, 1), _gn(c2), nn.SiLU(),
            nn.Conv2d(c2, c3, 4, 2, 1), _gn(c3), nn.SiLU(),
            nn.Conv2d(c3, c3, 3, 1, 1), _gn(c3), nn.SiLU(),
            nn.Conv2d(c3, latent, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, c3, 3, 1, 1), _gn(c3), nn.SiLU(),
            nn.Conv2d(c3, c3, 3, 1, 1), _gn(c3), nn.SiLU(),
            nn.ConvTranspose2d(c3, c2, 4, 2, 1), _gn(c2), nn.SiLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), _gn(c1), nn.SiLU(),
            nn.ConvTranspose2d(c1, c1 // 2, 4, 2, 1), nn.SiLU(),  # full resolution: kept narrow (most of the cost)
            nn.Conv2d(c1 // 2, 3, 3, 1, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, latent, H/8, W/8) in (-1, 1)."""
        return torch.tanh(self.encoder(x * 2.0 - 1.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent grid -> (B, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))


class FiLMBlock(nn.Module):
    """A residual conv block whose normalized activations are scaled and shifted by a condition."""

    def __init__(self, channels: int, cond: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gn(channels), nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2, self.conv2 = _gn(channels), nn.Conv2d(channels, channels, 3, 1, 1)
        self.film = nn.Linear(cond, 2 * channels)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(c)[..., None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class ChunkDynamics(nn.Module):
    """(latents, normalized state, chunk) -> (next latents, next normalized state, success logit)."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        zc = cfg.latent_channels * len(cfg.cameras)
        d, hid = cfg.dyn_channels, cfg.hidden
        self.cond = nn.Sequential(nn.Linear(cfg.state_dim + cfg.chunk_size * cfg.action_dim, hid), nn.SiLU(),
                                  nn.Linear(hid, hid), nn.SiLU())
        self.inp = nn.Conv2d(zc, d, 3, 1, 1)
        self.blocks = nn.ModuleList([FiLMBlock(d, hid) for _ in range(cfg.dyn_blocks)])
        self.out = nn.Sequential(_gn(d), nn.SiLU(), nn.Conv2d(d, zc, 3, 1, 1))
        self.head = nn.Sequential(nn.Linear(2 * d + hid, hid), nn.SiLU(), nn.Linear(hid, cfg.state_dim + 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z: torch.Tensor, state: torch.Tensor, chunk: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cond(torch.cat([state, chunk.flatten(1)], dim=1))
        h = self.inp(z)
        for block in self.blocks:
            h = block(h, c)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), c], dim=1)
        out = self.head(pooled)
        return z + self.out(h), state + out[:, :-1], out[:, -1]


class WorldModel(nn.Module):
    """Frame codecs for every camera plus the chunk dynamics, with the state's statistics.

    Latents of all cameras are concatenated on the channel axis: ``(B, cams * latent, g, g)``.
    """

    def __init__(self, cfg: WorldModelConfig, state_mean: np.ndarray | None = None,
                 state_std: np.ndarray | None = None) -> None:
        super().__init__()
        if not cfg.cameras or cfg.state_dim < 1 or cfg.action_dim < 1:
            raise ValueError("WorldModelConfig needs cameras, state_dim and action_dim (filled from the data)")
        self.cfg = cfg
        self.codecs = nn.ModuleDict({cam: FrameCodec(list(cfg.codec_channels), cfg.latent_channels)
                                     for cam in cfg.cameras})
        self.dynamics = ChunkDynamics(cfg)
        mean = np.zeros(cfg.state_dim) if state_mean is None else state_mean
        std = np.ones(cfg.state_dim) if state_std is None else state_std
        self.register_buffer("state_mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("state_std", torch.as_tensor(np.asarray(std), dtype=torch.float32))

    @property
    def device(self) -> torch.device:
        return self.state_mean.device

    # ------------------------------------------------------------------ observations <-> latents
    def frames_tensor(self, images: Any) -> torch.Tensor:
        """uint8 (B, H, W, 3) (numpy or torch) -> float (B, 3, H, W) in [0, 1] on the model's device."""
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        return x.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)

    def encode(self, images: dict[str, Any]) -> torch.Tensor:
        """``{camera: uint8 (B, H, W, 3)}`` -> latents (B, cams * latent, g, g)."""
        return torch.cat([self.codecs[cam].encode(self.frames_tensor(images[cam])) for cam in self.cfg.cameras], 1)

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents -> ``{camera: float (B, 3, H, W) in [0, 1]}``."""
        parts = z.split(self.cfg.latent_channels, dim=1)
        return {cam: self.codecs[cam].decode(p) for cam, p in zip(self.cfg.cameras, parts)}

    @staticmethod
    def to_uint8(frames: torch.Tensor) -> np.ndarray:
        """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3), the contract's image layout."""
        return (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def normalize_state(self, state: Any) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(state, dtype=np.float32) if not isinstance(state, torch.Tensor) else state)
        return (s.to(self.device).float() - self.state_mean) / self.state_std

    def unnormalize_state(self, state: torch.Tensor) -> torch.Tensor:
        return state * self.state_std + self.state_mean

    def step(self, z: torch.Tensor, state_n: torch.Tensor, chunk: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk of imagination: (next latents, next normalized state, success logit)."""
        return self.dynamics(z, state_n, chunk)

    # ------------------------------------------------------------------ checkpoints
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | os.PathLike, tensors: dict[str, torch.Tensor] | None = None,
             **fields: Any) -> Path:
        """Write a ``world_model`` checkpoint directory (atomic); ``fields`` as in :class:`Checkpoint`."""
        weights = dict(self.state_dict()) if tensors is None else tensors
        return save_checkpoint(Checkpoint(kind=KIND, config=dataclasses.asdict(self.cfg), tensors=weights, **fields),
                               directory)

    def check_compatible(self, spec: Any) -> None:
        """Raise :class:`CheckpointError` if a policy's interface (``policy.spec``) is not the one this
        model imagines: cameras, resolution, state / action size and chunk length."""
        cfg = self.cfg
        missing = [c for c in spec.cameras if c not in cfg.cameras]
        if missing:
            raise CheckpointError(f"the world model has no camera '{missing[0]}' (it models {cfg.cameras}); "
                                  "train it on data with the policy's cameras")
        checks = [("image size", list(spec.image_size), list(cfg.image_size)),
                  ("state dimension", int(spec.state_dim), cfg.state_dim),
                  ("action dimension", int(spec.action_dim), cfg.action_dim),
                  ("chunk size", int(spec.chunk_size), cfg.chunk_size)]
        for name, want, have in checks:
            if want != have:
                raise CheckpointError(f"the world model's {name} is {have}, the policy's is {want}")


def world_model_from_checkpoint(ckpt: Checkpoint, where: str) -> WorldModel:
    from vla_rft.config import ConfigError, from_dict

    try:
        cfg = from_dict(WorldModelConfig, ckpt.config)
        model = WorldModel(cfg)
        model.load_state_dict(ckpt.tensors)
    except (ConfigError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{where}: not a loadable world model ({e})") from e
    return model


def load_world_model(path: str | os.PathLike, *, device: str = "cpu") -> WorldModel:
    """Load a world-model checkpoint (eval mode); a checkpoint of another kind is a clear error."""
    ckpt = load_checkpoint(path, kind=KIND, device=device)
    return world_model_from_checkpoint(ckpt, f"checkpoint '{path}'").to(device).eval()
