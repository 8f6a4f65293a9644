"""The deployment loop end to end: `vla-rft deploy` episodes (with the expert supervisor's
interventions) are data that chunked TD and the world model train on, unchanged."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np

from vla_rft.data.chunks import load_episode_table

ROBOT_YAML = """kind: mujoco
name: sim_arm_pick_cube
task: pick_cube
cameras: [front, wrist]
image_size: 64
seed: 5
"""


def _cli(*args: str) -> int:
    from vla_rft.cli import main

    handler = signal.getsignal(signal.SIGTERM)  # `deploy` installs its own; keep pytest's
    try:
        return main(list(args))
    finally:
        signal.signal(signal.SIGTERM, handler)


def test_deployed_episodes_train_chunked_td_and_a_world_model(tmp_path: Path) -> None:
    robot = tmp_path / "robot.yaml"
    robot.write_text(ROBOT_YAML)
    deployed = tmp_path / "deployed"
    assert _cli("deploy", "--robot", str(robot), "--policy", "scripted:zero", "--teleop", "expert",
                "--supervisor.stall_steps", "8", "--supervisor.takeover_steps", "10", "--episodes", "2",
                "--max_steps", "30", "--realtime", "false", "--out", str(deployed)) == 0
    table = load_episode_table(deployed)
    flags = table.arrays["intervention"].reshape(-1)
    assert len(table) == 60 and 0 < flags.sum() < len(flags)
    # an intervention frame stores the (filtered) expert command as the executed action
    moved = np.abs(table.arrays["action"][flags][:, :3]).max()
    assert moved > 0.1 and np.abs(table.arrays["action"][~flags][:, :3]).max() < 1e-6

    assert _cli("finetune", "--algo", "chunked-td", "--data", f"[{deployed}]", "--policy", "pretrained:tiny_kp_4task",
                "--task", "pick_cube", "--iterations", "3", "--chunked_td.intervention_penalty", "1", "--eval_every", "0", "--eval_episodes", "0",
                "--retain_tasks", "[]", "--chunked_td.batch_size", "16", "--logging.wandb", "disabled",
                "--logging.root", str(tmp_path), "--logging.name", "qc") == 0
    rows = [json.loads(x) for x in (tmp_path / "qc" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    critic = [r["train/loss/td"] for r in rows if "train/loss/td" in r]
    assert len(critic) == 3 and np.all(np.isfinite(critic))
    assert (tmp_path / "qc" / "checkpoints" / "last" / "meta.json").is_file()

    assert _cli("world-model", "train", "--data", f"[{deployed}]", "--val_episodes", "0", "--steps", "2",
                "--model.latent_channels", "8", "--model.codec_channels", "[8,16,16]", "--model.dyn_channels", "32",
                "--model.dyn_blocks", "1", "--model.hidden", "64", "--chunk_size", "4", "--horizon", "2",
                "--batch_size", "4", "--logging.wandb", "disabled", "--logging.root", str(tmp_path),
                "--logging.name", "wm") == 0
    assert (tmp_path / "wm" / "checkpoints" / "last" / "meta.json").is_file()
