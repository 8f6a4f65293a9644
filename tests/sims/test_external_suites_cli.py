"""The external suites through every command: a Meta-World (and, marked slow, a robosuite) task is
collected by its expert, behaviour-cloned, evaluated, fine-tuned with PPO and learned by the world
model, each through `vla-rft`, in fresh processes as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_MODE": "disabled"}


def _run(args: list[str], cwd: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "vla_rft.cli", *args, "--json"], capture_output=True, text=True,
                       env=ENV, timeout=900, check=False, cwd=cwd)
    assert p.returncode == 0, f"vla-rft {' '.join(args)} failed:\n{p.stderr[-3000:]}"
    assert "warn" not in p.stderr.lower(), f"library warnings on the terminal:\n{p.stderr[-3000:]}"
    return json.loads(p.stdout)


def _pipeline(task: str, tmp: Path) -> None:
    data = tmp / "demos"
    col = _run(["collect", "--task", task, "--episodes", "2", "--seed", "3", "--out", str(data), "--image_size", "32"], tmp)
    assert col["episodes_written"] == 2 and col["success_rate"] == 1.0
    log = ["--logging.root", str(tmp)]
    pre = _run(["pretrain", "--config", "tiny", "--datasets", f"[{data}]", "--steps", "2", "--batch_size", "4",
                *log, "--logging.name", "bc"], tmp)
    assert pre["step"] == 2
    policy = str(tmp / "bc" / "checkpoints" / "last")
    ev = _run(["eval", "--policy", policy, "--tasks", f"[{task}]", "--episodes", "2", "--num_envs", "2", *log], tmp)
    assert ev["episodes"] == 2
    ft = _run(["finetune", "--config", "ppo_tiny", "--policy", policy, "--task", task, "--iterations", "1",
               "--num_envs", "2", "--rollout_len", "2", "--eval_episodes", "0", *log, "--logging.name", "ppo"], tmp)
    assert ft["iteration"] == 1 and ft["env_steps"] > 0
    assert (tmp / "ppo" / "checkpoints" / "last" / "meta.json").is_file()
    wm = _run(["world-model", "train", "--data", f"[{data}]", "--val_episodes", "0", "--steps", "2",
               "--model.latent_channels", "8", "--model.codec_channels", "[8,16,16]", "--model.dyn_channels", "32",
               "--model.dyn_blocks", "1", "--model.hidden", "64", "--chunk_size", "4", "--horizon", "2",
               "--batch_size", "4", *log, "--logging.name", "wm"], tmp)
    assert (tmp / "wm" / "checkpoints" / "last" / "meta.json").is_file() and wm


def test_metaworld_task_through_every_command(tmp_path: Path) -> None:
    pytest.importorskip("metaworld")
    _pipeline("metaworld_reach", tmp_path)


@pytest.mark.slow
def test_robosuite_task_through_every_command(tmp_path: Path) -> None:
    pytest.importorskip("robosuite")
    _pipeline("robosuite_lift", tmp_path)
