"""A small untrained policy for the sims tasks (one 32x32 front camera, S = 14, A = 7, h = 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vla_rft.policies import Normalizer, VLAConfig, VLAPolicy

SIM_STATE_DIM, SIM_ACTION_DIM = 14, 7


def sim_policy(seed: int = 0) -> VLAPolicy:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = VLAConfig(cameras=["front"], image_size=[32, 32], state_dim=SIM_STATE_DIM, action_dim=SIM_ACTION_DIM,
                    chunk_size=4, dim=32, depth=1, num_heads=2, cnn_channels=[8, 16], image_grid=2,
                    text_encoder="hashing", head="gaussian")
    norm = Normalizer.from_data(rng.standard_normal((64, SIM_STATE_DIM)), rng.uniform(-1, 1, (64, SIM_ACTION_DIM)))
    return VLAPolicy(cfg, norm)


def save_sim_policy(directory: Path, seed: int = 0) -> Path:
    sim_policy(seed).save(directory)
    return directory
