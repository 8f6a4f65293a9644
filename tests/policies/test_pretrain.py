"""`vla-rft pretrain` learns a known expert, resumes bit-for-bit; `vla-rft bench policy` reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from policy_fixtures import make_obs
from safetensors.torch import load_file

from vla_rft.cli import main
from vla_rft.commands.bench_policy import BenchPolicyConfig, bench_policy
from vla_rft.commands.pretrain import PretrainConfig, run, train
from vla_rft.config import parse_config
from vla_rft.data.chunks import ChunkWindows, load_episode_table
from vla_rft.policies import load_policy

SMALL_VLA = {"type": "vla", "dim": 32, "depth": 1, "num_heads": 2, "cnn_channels": [8, 16], "image_grid": 2,
             "flow_steps": 3, "flow_hidden": 32, "aug_shift": 2}


@pytest.fixture(scope="module")
def small_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "small_vla.yaml"
    path.write_text(yaml.safe_dump(SMALL_VLA))
    return str(path)


def _args(dataset, preset, root, name, *extra):
    return ["--datasets", f"[{dataset}]", "--policy", preset, "--text_encoder", "hashing", "--chunk_size", "4",
            "--batch_size", "16", "--optim.warmup_steps", "2", "--log_every", "1", "--save_every", "0",
            "--logging.root", str(root), "--logging.name", name, "--logging.wandb", "disabled", *extra]


def _first_action_error(policy, dataset) -> tuple[float, float]:
    """Mean |predicted - expert| of each chunk's first action, and sign accuracy of the
    image-dependent dimension, over every frame of the dataset."""
    batch = ChunkWindows(load_episode_table(dataset), policy.spec.chunk_size).batch(np.arange(128))
    pred = policy.act(batch)[:, 0]
    expert = batch["action"][:, 0]
    return float(np.abs(pred - expert).mean()), float(np.mean(np.sign(pred[:, 3]) == np.sign(expert[:, 3])))


def test_behaviour_cloning_learns_the_expert(synthetic_dataset, small_preset, tmp_path, capsys):
    code = main(["pretrain", *_args(synthetic_dataset, small_preset, tmp_path, "bc", "--steps", "300",
                                    "--optim.lr", "3e-3", "--json")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    records = [json.loads(line) for line in (tmp_path / "bc" / "metrics.jsonl").read_text().splitlines()]
    l1 = [r["train/l1"] for r in records]
    assert np.mean(l1[-20:]) < 0.4 * np.mean(l1[:5])
    policy = load_policy(summary["checkpoint"], cameras=["front"], state_dim=5, action_dim=6)
    err, sign_acc = _first_action_error(policy, synthetic_dataset)
    assert err < 0.1 and sign_acc > 0.95, (err, sign_acc)
    assert json.loads((tmp_path / "bc" / "summary.json").read_text())["step"] == 300


def test_flow_head_trains(synthetic_dataset, small_preset, tmp_path):
    cfg = parse_config(PretrainConfig, _args(synthetic_dataset, small_preset, tmp_path, "flow", "--steps", "80",
                                             "--head", "flow", "--optim.lr", "3e-3"))
    summary = train(cfg)
    assert summary["loss_last"] < summary["loss_first"]
    assert load_policy(summary["checkpoint"]).act(make_obs(2, state_dim=5)).shape == (2, 4, 6)


def test_resume_is_bit_exact(synthetic_dataset, small_preset, tmp_path):
    straight = train(parse_config(PretrainConfig, _args(synthetic_dataset, small_preset, tmp_path, "a", "--steps", "4")))
    stopped = train(parse_config(PretrainConfig, _args(synthetic_dataset, small_preset, tmp_path, "b", "--steps", "4",
                                                       "--stop_at", "2")))
    assert stopped["step"] == 2 and not stopped["finished"]
    assert run(parse_config(PretrainConfig, ["--resume", str(tmp_path / "b")])) == 0
    a, b = tmp_path / "a" / "checkpoints" / "last", tmp_path / "b" / "checkpoints" / "last"
    for name in ("model.safetensors", "optimizer.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert ta[k].equal(tb[k]), f"{name}:{k} differs after resume"
    assert json.loads((a / "meta.json").read_text())["step"] == straight["step"] == 4


def test_pretrain_input_errors(synthetic_dataset, small_preset, tmp_path, capsys):
    assert main(["pretrain", "--steps", "1"]) == 2
    assert "--datasets is required" in capsys.readouterr().err
    assert main(["pretrain", *_args(tmp_path / "nope", small_preset, tmp_path, "x", "--steps", "1")]) == 2
    assert "not a LeRobotDataset" in capsys.readouterr().err
    assert main(["pretrain", *_args(synthetic_dataset, small_preset, tmp_path, "y", "--cameras", "[wrist]")]) == 2
    assert "no camera 'wrist'" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(tmp_path / "none")]) == 2


def test_bench_policy_rows():
    result = bench_policy(BenchPolicyConfig(presets=["tiny"], heads=["gaussian", "flow"], batch_sizes=[1],
                                            resolutions=[64], iters=3, warmup=1))
    assert [r["head"] for r in result["rows"]] == ["gaussian", "flow"]
    for row in result["rows"]:
        assert {"preset", "batch", "resolution", "params", "p50_ms", "p99_ms"} <= set(row)
        assert row["p50_ms"] > 0 and row["params"] > 0


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(synthetic_dataset, small_preset, tmp_path):
    """Behaviour cloning killed with SIGKILL between checkpoints (a real kill, not --stop_at):
    --resume drops the records logged past the last checkpoint, redoes those steps, and ends
    with the loss curve and the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def child(name, *extra):
        args = _args(synthetic_dataset, small_preset, tmp_path, name, "--steps", "300", "--save_every", "20", *extra)
        return subprocess.Popen([sys.executable, "-m", "vla_rft.cli", "pretrain", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "MUJOCO_GL": "egl"})

    assert child("full").wait(timeout=600) == 0
    proc = child("killed")
    meta, metrics = tmp_path / "killed" / "checkpoints" / "last" / "meta.json", tmp_path / "killed" / "metrics.jsonl"

    def step_and_lines():
        if not (meta.is_file() and metrics.is_file()):
            return 0, 0
        return json.loads(meta.read_text())["step"], len(metrics.read_text().splitlines())

    t0 = time.time()
    while not (step_and_lines()[0] >= 20 and step_and_lines()[1] > step_and_lines()[0] + 2):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() - t0 < 300
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt, lines = step_and_lines()
    assert 20 <= ckpt < 300 and lines > ckpt
    assert child("resumed", "--resume", str(tmp_path / "killed")).wait(timeout=600) == 0

    def losses(name):
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]

    assert losses("killed") == losses("full") and len(losses("full")) == 300
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / "last" / "model.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)
