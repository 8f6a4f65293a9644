"""The built-in VLA: CNN image tokens + frozen sentence embedding + state token + h action
queries, fused by a small transformer encoder; a chunk head reads the action-query outputs.

Token sequence (B, T, D), T = cameras * T_img + 1 + 1 + h (T_img = grid^2 or K keypoints)::

    [cam0 patches .. camN patches | instruction | state | query_1 .. query_h]

Every camera goes through the same CNN (cameras stacked on the batch axis, one pass); a
learned camera embedding tells the trunk which view a token came from. All attention is
bidirectional: the action queries read everything and are decoded in parallel (OpenVLA-OFT's
parallel decoding), one forward pass per chunk. The value head reads the first action query's
output, the hidden state "at the first action position" that RL4VLA's shared critic uses.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vla_rft.config import ConfigError
from vla_rft.policies.augment import augment_images
from vla_rft.policies.base import Policy, PolicyInput, PolicySpec, TrunkFeatures, register_policy
from vla_rft.policies.heads import ActionHead, FlowMatchingHead, GaussianChunkHead
from vla_rft.policies.normalizer import Normalizer
from vla_rft.policies.text import TEXT_DIM, TEXT_ENCODERS, embed_texts
from vla_rft.policies.vla.configuration_vla import VLAConfig

HEADS = ("gaussian", "flow")
IMAGE_TOKENS = ("grid", "keypoints")


def conv_strides(cfg: VLAConfig) -> list[int]:
    return list(cfg.cnn_strides) if cfg.cnn_strides is not None else [2] * len(cfg.cnn_channels)


def check_config(cfg: VLAConfig) -> None:
    """Reject configs that would fail deep inside torch, with a message naming the field."""
    if cfg.head not in HEADS:
        raise ConfigError(f"head must be one of {HEADS}, got '{cfg.head}'")
    if cfg.text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"text_encoder must be one of {TEXT_ENCODERS}, got '{cfg.text_encoder}'")
    if cfg.dim % cfg.num_heads:
        raise ConfigError(f"dim ({cfg.dim}) must be divisible by num_heads ({cfg.num_heads})")
    if not cfg.cameras or len(set(cfg.cameras)) != len(cfg.cameras):
        raise ConfigError(f"cameras must be a non-empty list of distinct names, got {cfg.cameras}")
    if cfg.image_tokens not in IMAGE_TOKENS:
        raise ConfigError(f"image_tokens must be one of {IMAGE_TOKENS}, got '{cfg.image_tokens}'")
    strides = conv_strides(cfg)
    if len(strides) != len(cfg.cnn_channels) or any(st < 1 for st in strides):
        raise ConfigError(f"cnn_strides {cfg.cnn_strides} must give one stride >= 1 per convolution "
                          f"({len(cfg.cnn_channels)} in cnn_channels)")
    reduction = math.prod(strides)
    cells = cfg.image_grid if cfg.image_tokens == "grid" else 2
    if len(cfg.image_size) != 2 or min(cfg.image_size) < cells * reduction:
        raise ConfigError(f"image_size {cfg.image_size} is too small for convolutions of strides {strides} "
                          f"and a {cells}x{cells} feature grid")
    if cfg.keypoint_temperature <= 0:
        raise ConfigError(f"keypoint_temperature must be > 0, got {cfg.keypoint_temperature}")
    for name in ("state_dim", "action_dim", "chunk_size", "depth", "image_grid", "num_keypoints"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def apply_film(fmap: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
    """FiLM (Perez et al. 2018; RT-1's language-conditioned EfficientNet): ``film`` (N, 2C) holds a
    per-channel (gamma, beta); fmap (N, C, h, w) -> fmap * (1 + gamma) + beta."""
    gamma, beta = film[:, :, None, None].chunk(2, dim=1)
    return fmap * (1 + gamma) + beta


def conv_layers(channels: list[int], strides: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    prev = 3
    for c, st in zip(channels, strides, strict=True):
        layers += [nn.Conv2d(prev, c, 3, stride=st, padding=1), nn.GroupNorm(min(4, c), c), nn.GELU()]
        prev = c
    return layers


class ImageEncoder(nn.Module):
    """(N, 3, H, W) normalized images -> (N, grid^2, D) tokens with 2-D position embeddings."""

    def __init__(self, channels: list[int], strides: list[int], dim: int, grid: int) -> None:
        super().__init__()
        self.net = nn.Sequential(*conv_layers(channels, strides), nn.Conv2d(channels[-1], dim, 1),
                                 nn.AdaptiveAvgPool2d(grid))
        self.pos = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.film_channels = dim

    def forward(self, images: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.net(images)  # (N, D, grid, grid)
        if film is not None:
            fmap = apply_film(fmap, film)
        return fmap.flatten(2).transpose(1, 2) + self.pos  # (N, grid^2, D)


class KeypointEncoder(nn.Module):
    """(N, 3, H, W) normalized images -> (N, K, D) keypoint tokens (spatial softmax).

    Each of the K learned attention maps over the final feature map gives an expected position
    (x, y) in [-1, 1] (robomimic's SpatialSoftmax; Levine et al. 2016) and the feature vector it
    attends to. Average pooling to a coarse grid throws away where a small object is; the
    expectation keeps it at sub-cell precision, which is what reaching a 2 cm target needs.
    """

    def __init__(self, channels: list[int], strides: list[int], dim: int, keypoints: int,
                 temperature: float = 1.0) -> None:
        super().__init__()
        c = channels[-1]
        self.net = nn.Sequential(*conv_layers(channels, strides))
        self.attend = nn.Conv2d(c, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.proj = nn.Sequential(nn.Linear(c + 2, dim), nn.GELU(), nn.Linear(dim, dim))
        self.ids = nn.Parameter(torch.randn(keypoints, dim) * 0.02)
        self.film_channels = c

    def forward(self, images: torch.Tensor, film: torch.Tensor | None = None) -> torch.Tensor:
        fmap = self.net(images)  # (N, C, h, w)
        if film is not None:  # the instruction decides which features the keypoints can find
            fmap = apply_film(fmap, film)
        h, w = fmap.shape[-2:]
        ys = torch.linspace(-1.0, 1.0, h, device=fmap.device, dtype=fmap.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=fmap.device, dtype=fmap.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)  # (h*w, 2) as (x, y)
        logits = self.attend(fmap).flatten(2) * torch.exp(-self.log_temperature)  # (N, K, h*w)
        attn = torch.softmax(logits, dim=-1)
        xy = attn @ grid  # (N, K, 2)
        feats = attn @ fmap.flatten(2).transpose(1, 2)  # (N, K, C)
        return self.proj(torch.cat([feats, xy], dim=-1)) + self.ids  # (N, K, D)


def make_image_encoder(cfg: VLAConfig) -> nn.Module:
    channels, strides = list(cfg.cnn_channels), conv_strides(cfg)
    if cfg.image_tokens == "keypoints":
        return KeypointEncoder(channels, strides, cfg.dim, cfg.num_keypoints, cfg.keypoint_temperature)
    return ImageEncoder(channels, strides, cfg.dim, cfg.image_grid)


def make_head(cfg: VLAConfig) -> ActionHead:
    if cfg.head == "gaussian":
        return GaussianChunkHead(cfg.dim, cfg.chunk_size, cfg.action_dim, init_log_std=cfg.init_log_std, loss=cfg.loss)
    return FlowMatchingHead(cfg.dim, cfg.chunk_size, cfg.action_dim, steps=cfg.flow_steps, hidden=cfg.flow_hidden,
                            init_log_noise=cfg.init_log_noise)


@register_policy("vla")
class VLAPolicy(Policy):
    """The project's own VLA (presets tiny / small / base)."""

    config_class = VLAConfig

    def __init__(self, config: VLAConfig, normalizer: Normalizer) -> None:
        check_config(config)
        super().__init__(config, normalizer)
        d = config.dim
        self.image_encoder = make_image_encoder(config)
        self.film = None
        if config.film:  # zero-initialized: training starts from the unconditioned encoder
            self.film = nn.Linear(TEXT_DIM, 2 * self.image_encoder.film_channels)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.camera_embed = nn.Parameter(torch.randn(len(config.cameras), d) * 0.02)
        self.text_proj = nn.Linear(TEXT_DIM, d)
        self.state_proj = nn.Sequential(nn.Linear(config.state_dim, d), nn.GELU(), nn.Linear(d, d))
        self.type_embed = nn.Parameter(torch.randn(3, d) * 0.02)  # instruction, state, action query
        self.action_queries = nn.Parameter(torch.randn(config.chunk_size, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, config.num_heads, int(d * config.mlp_ratio), config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = make_head(config)
        self.value_net = (nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
                          if config.value_head else None)
        if config.critic_qs > 0:
            self.attach_critic(config.critic_qs, config.critic_hidden, config.critic_layers, config.critic_horizon)

    def attach_critic(self, num_qs: int, hidden: int, layers: int, horizon: int) -> None:
        """Build the chunk critic (recorded in the config, so checkpoints rebuild it)."""
        from vla_rft.policies.critic import ChunkCritic

        c = self.config
        if not 0 <= horizon <= c.chunk_size:
            raise ConfigError(f"critic horizon must be in [0, {c.chunk_size}] (0 is the whole chunk), got {horizon}")
        c.critic_qs, c.critic_hidden, c.critic_layers, c.critic_horizon = num_qs, hidden, layers, horizon
        self.critic = ChunkCritic(c.dim, horizon or c.chunk_size, c.action_dim, hidden, layers, num_qs)
        if next(self.parameters(), None) is not None:
            self.critic.to(next(self.parameters()).device)

    @property
    def spec(self) -> PolicySpec:
        c = self.config
        return PolicySpec(cameras=list(c.cameras), image_size=(int(c.image_size[0]), int(c.image_size[1])),
                          state_dim=c.state_dim, action_dim=c.action_dim, chunk_size=c.chunk_size,
                          extra={"policy_type": "vla", "head": c.head, "text_encoder": c.text_encoder})

    def _image_tokens(self, inp: PolicyInput, text: torch.Tensor, augment: bool) -> torch.Tensor:
        c = self.config
        imgs = torch.stack([inp.images[cam] for cam in c.cameras], dim=1)  # (B, C, 3, H, W)
        flat = imgs.flatten(0, 1)  # (B*C, 3, H, W): one CNN pass for every camera
        if augment and c.augment:
            flat = augment_images(flat, shift=c.aug_shift, brightness=c.aug_brightness, contrast=c.aug_contrast)
        film = None
        if self.film is not None:  # one (gamma, beta) per sample, repeated for each of its cameras
            film = self.film(text).repeat_interleave(imgs.shape[1], dim=0)  # (B*C, 2*channels)
        tokens = self.image_encoder((flat - 0.5) / 0.25, film)  # (B*C, T_img, D)
        tokens = tokens.unflatten(0, imgs.shape[:2]) + self.camera_embed[None, :, None]  # (B, C, T_img, D)
        return tokens.flatten(1, 2)  # (B, C*T_img, D)

    def features(self, inp: PolicyInput, *, augment: bool = False) -> TrunkFeatures:
        b, h = inp.batch_size, self.config.chunk_size
        text = embed_texts(inp.tasks, self.config.text_encoder).to(inp.state.device)  # (B, 384)
        seq = torch.cat([
            self._image_tokens(inp, text, augment),
            (self.text_proj(text) + self.type_embed[0])[:, None],  # (B, 1, D)
            (self.state_proj(inp.state) + self.type_embed[1])[:, None],  # (B, 1, D)
            (self.action_queries + self.type_embed[2]).expand(b, h, -1),  # (B, h, D)
        ], dim=1)
        out = self.norm(self.trunk(seq))  # (B, T, D)
        actions = out[:, -h:]  # (B, h, D)
        return TrunkFeatures(action_tokens=actions, pooled=actions[:, 0])
