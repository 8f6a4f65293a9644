"""Config of the built-in VLA (presets: configs/policy/{tiny,small,base}.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VLAConfig:
    """A small vision-language-action transformer. The first block (interface) is filled from
    the training data by ``vla-rft pretrain``; the rest is the architecture."""

    cameras: list[str] = field(default_factory=lambda: ["front"])
    """Cameras the policy reads (observation.images.CAMERA), all through one shared image encoder."""
    image_size: list[int] = field(default_factory=lambda: [64, 64])
    """[H, W] of every camera image."""
    state_dim: int = 7
    """S, the dimension of ``observation.state``."""
    action_dim: int = 7
    """A, the dimension of one action."""
    chunk_size: int = 8
    """h, actions per chunk (OpenVLA-OFT used 8 on LIBERO)."""

    dim: int = 128
    """Width D of the transformer trunk and of every token."""
    depth: int = 2
    """Number of transformer encoder layers."""
    num_heads: int = 4
    """Attention heads per layer (must divide ``dim``)."""
    mlp_ratio: float = 2.0
    """Feed-forward width as a multiple of ``dim``."""
    dropout: float = 0.0
    """Dropout in the trunk (0 keeps BC and PPO log-probs deterministic)."""
    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    """Channels of the 3x3 convolutions of the per-camera image encoder."""
    cnn_strides: list[int] | None = None
    """Stride of each convolution (default 2 for every one); a last stride of 1 keeps a finer map for keypoints."""
    image_tokens: str = "grid"
    """How the CNN feature map becomes tokens: grid (average-pooled to image_grid x image_grid, one
    token per cell) or keypoints (spatial softmax, robomimic / Diffusion Policy: num_keypoints
    tokens per camera, each the expected (x, y) of a learned attention map plus the features
    it attends to, so object positions survive to the trunk)."""
    image_grid: int = 4
    """Grid tokens per camera are image_grid squared (image_tokens: grid)."""
    num_keypoints: int = 16
    """Keypoint tokens per camera (image_tokens: keypoints)."""
    keypoint_temperature: float = 1.0
    """Initial softmax temperature of the keypoint attention maps (learned); lower starts sharper."""
    film: bool = False
    """Condition the image encoder on the instruction with FiLM (per-channel scale and shift of the
    last feature map from the sentence embedding, zero-initialized), so which object a keypoint
    finds can depend on the instruction's colour and noun."""
    text_encoder: str = "minilm"
    """Frozen instruction encoder, minilm (all-MiniLM-L6-v2, the default) or hashing (tests only)."""

    head: str = "gaussian"
    """Action head, gaussian (mean and learned log-std) or flow (flow matching with Gaussian Euler steps)."""
    loss: str = "l1"
    """Gaussian head BC loss, l1 (L1 on the mean plus NLL for the std, as OpenVLA-OFT) or nll."""
    init_log_std: float = -1.0
    """Initial log-std of the Gaussian head, normalized action units."""
    flow_steps: int = 10
    """K, Euler integration steps of the flow head."""
    flow_hidden: int = 128
    """Hidden width of the flow head's velocity MLP."""
    init_log_noise: float = -2.5
    """Initial log of the flow head's per-step noise scale (learned during RL)."""
    value_head: bool = True
    """Build the value MLP on the pooled trunk feature (shared actor-critic, RL4VLA)."""
    critic_qs: int = 0
    """Ensemble size of the chunk critic Q(s, chunk) on the pooled feature (0 builds none; set by finetune --algo chunked-td)."""
    critic_hidden: int = 256
    """Hidden width of each chunk-critic MLP."""
    critic_layers: int = 2
    """Hidden layers of each chunk-critic MLP."""
    critic_horizon: int = 0
    """Steps of the chunk the critic reads (0 is the whole chunk; 1 is a single-step critic)."""
    best_of_n: int = 0
    """Act with the best of this many sampled chunks by the critic's mean Q (Q-chunking's QC actor; 0 acts with the head alone)."""

    augment: bool = True
    """Augment images in training mode (random shift + brightness/contrast jitter)."""
    aug_shift: int = 4
    """Maximum random shift in pixels (DrQ-style pad-and-crop)."""
    aug_brightness: float = 0.1
    """Maximum brightness offset (images in [0, 1])."""
    aug_contrast: float = 0.1
    """Maximum relative contrast change."""
