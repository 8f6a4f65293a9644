"""Shared helpers: a small synthetic LeRobotDataset and small policies built without data.

The dataset's expert is a known function of the observation, so learning can be checked:
action[:3] = 0.8 * state[:3] (proprioception), action[3] = +0.6 for a red frame and -0.6 for a
blue one (vision; the colour is drawn per episode, independent of the instruction),
action[4:] = 0. Two instructions, 16 episodes of 8 frames, 32x32 images.
"""

from __future__ import annotations

import numpy as np
import torch

from vla_rft.contract import STATE_KEY
from vla_rft.data.lerobot_io import EpisodeWriter, contract_features
from vla_rft.policies import Normalizer, VLAConfig, VLAPolicy

IMAGE = 32
STATE_DIM = 5
ACTION_DIM = 6
TASKS = ["push the red block left", "lift the blue block"]


def expert_action(state: np.ndarray, red: bool) -> np.ndarray:
    action = np.zeros(ACTION_DIM, np.float32)
    action[:3] = 0.8 * state[:3]
    action[3] = 0.6 if red else -0.6
    return action


def synthetic_frame(rng: np.random.Generator, red: bool, task: str) -> dict:
    img = rng.integers(0, 40, (IMAGE, IMAGE, 3), dtype=np.uint8)
    img[..., 0 if red else 2] += 180
    return {"observation.images.front": img, STATE_KEY: rng.uniform(-1, 1, STATE_DIM).astype(np.float32),
            "task": task}


def write_dataset(root, episodes: int = 16, length: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    writer = EpisodeWriter(root, contract_features(["front"], (IMAGE, IMAGE), STATE_DIM, ACTION_DIM), fps=10)
    for ep in range(episodes):
        red = bool(rng.random() < 0.5)
        for t in range(length):
            obs = synthetic_frame(rng, red, TASKS[ep % 2])
            last = t == length - 1
            writer.add_frame(obs, expert_action(obs[STATE_KEY], red), reward=float(last), success=last, done=last)
        writer.save_episode()
    writer.finalize()
    return root


def small_config(head: str = "gaussian", **overrides) -> VLAConfig:
    cfg = VLAConfig(cameras=["front"], image_size=[IMAGE, IMAGE], state_dim=STATE_DIM, action_dim=ACTION_DIM,
                    chunk_size=4, dim=32, depth=1, num_heads=2, cnn_channels=[8, 16], image_grid=2,
                    text_encoder="hashing", head=head, flow_steps=3, flow_hidden=32)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def make_policy(head: str = "gaussian", seed: int = 0, **overrides) -> VLAPolicy:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm = Normalizer.from_data(rng.standard_normal((64, STATE_DIM)), rng.uniform(-0.5, 0.5, (64, ACTION_DIM)))
    return VLAPolicy(small_config(head, **overrides), norm)


def make_obs(batch: int = 3, seed: int = 0, state_dim: int = STATE_DIM) -> dict:
    rng = np.random.default_rng(seed)
    frames = [synthetic_frame(rng, bool(i % 2), TASKS[i % 2]) for i in range(batch)]
    return {"observation.images.front": np.stack([f["observation.images.front"] for f in frames]),
            STATE_KEY: np.stack([f[STATE_KEY][:state_dim] for f in frames]), "task": [f["task"] for f in frames]}
