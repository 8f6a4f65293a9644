"""Training-time image augmentation, on the whole batch in torch.

Random shifts (pad by replicating the border, crop back at a random offset; DrQ's recipe) are
the augmentation that matters most for small image-based policies trained on few demos; a
small per-image brightness/contrast jitter covers the colour changes of the visual
perturbation level. Both draw from torch's global RNG (or ``generator``), which checkpoints
save, so resumed training repeats exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of (B, C, H, W) by up to ``pad`` whole pixels in x and y."""
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")  # (B, C, H+2p, W+2p)
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=images.device)
    rows = shifts[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing picks (B, H, W) pixels; channels move to the end, so permute back.
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def colour_jitter(images: torch.Tensor, brightness: float, contrast: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image brightness offset and contrast scale on (B, C, H, W) images in [0, 1]."""
    if brightness <= 0 and contrast <= 0:
        return images
    b = images.shape[0]
    u = torch.rand((b, 2, 1, 1, 1), generator=generator, device=images.device) * 2 - 1
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = (images - mean) * (1 + contrast * u[:, 1]) + mean + brightness * u[:, 0]
    return out.clamp(0, 1)


def augment_images(images: torch.Tensor, *, shift: int, brightness: float, contrast: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift then jitter a batch (B, C, H, W) of [0, 1] images."""
    return colour_jitter(random_shift(images, shift, generator), brightness, contrast, generator)
