"""A trained vla-rft checkpoint runs on a robot through `vla-rft deploy` and `vla-rft serve`'s loader."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from vla_rft.policies import Normalizer, VLAConfig, VLAPolicy

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(tmp_path: Path) -> Path:
    cfg = VLAConfig(cameras=["front"], image_size=[64, 64], state_dim=14, action_dim=7, chunk_size=4, dim=32,
                    depth=1, num_heads=2, cnn_channels=[8, 16], image_grid=2, text_encoder="hashing")
    norm = Normalizer.from_data(np.random.default_rng(0).normal(size=(50, 14)).astype(np.float32),
                                  np.random.default_rng(1).uniform(-1, 1, (50, 7)).astype(np.float32))
    return VLAPolicy(cfg, norm).save(tmp_path / "ckpt")


def test_checkpoint_loader_serves_policy_protocol(tmp_path):
    from robots.policy import PolicyProtocol, load_policy
    from vla_rft.policies.serving import register

    register()
    served = load_policy(str(_checkpoint(tmp_path)))
    assert isinstance(served, PolicyProtocol)
    md = served.metadata
    assert (md.state_dim, md.action_dim, md.chunk_size, md.cameras) == (14, 7, 4, ["front"])
    obs = {"observation.images.front": np.zeros((2, 64, 64, 3), np.uint8),
           "observation.state": np.zeros((2, 14), np.float32), "task": ["reach the ball", "reach the ball"]}
    chunk = served.act(obs)
    assert chunk.shape == (2, 4, 7) and chunk.dtype == np.float32 and np.abs(chunk).max() <= 1.0


def test_deploy_cli_runs_a_checkpoint_on_the_mujoco_robot(tmp_path):
    ckpt = _checkpoint(tmp_path)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run([sys.executable, "-m", "vla_rft.cli", "deploy", "--robot", "configs/robots/mujoco_arm.yaml",
                           "--policy", str(ckpt), "--out", str(tmp_path / "ds"), "--max_steps", "6",
                           "--realtime", "false", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["episodes"] == 1 and summary["frames"] == 6
    from vla_rft.data.lerobot_io import open_dataset

    ds = open_dataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and len(ds) == 6 and "action.policy" in ds.features
