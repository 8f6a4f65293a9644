"""Diagnostics for a behaviour-cloned policy that fails where its expert succeeds (docs/results.md).

Two checks, each printing one JSON object:

``sensitivity CKPT DATASET``: on the first frame of 32 episodes of DATASET, how much the first
predicted action (translation dims, normalized units) moves when one input is swapped with
another episode's (each camera, the state, the instruction), next to how much the expert's
labels differ between episodes. An input whose swap moves the action by ~0 is ignored.

``probe PRESET DATASET [--steps N] [--first_k K]``: trains a fresh policy of PRESET on only the
first K frames of the first 150 episodes and reports, every 100 steps, the first-action L1 error
and the sign accuracy of the y translation on those *training* frames and on 50 held-out
episodes. A policy that cannot push y-sign accuracy far above 0.5 on its own training frames has
a representation (or optimization) problem, not a generalization one.

    python benchmarks/diagnose_pretrain.py sensitivity runs/kp5-s0/checkpoints/last data/dart/press_button
    python benchmarks/diagnose_pretrain.py probe tiny_kp data/dart/press_button --steps 400 --first_k 6
    python benchmarks/diagnose_pretrain.py probe tiny_kp data/dart/press_button --steps 300 --set film=true
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def _first_frames(table) -> np.ndarray:
    return np.unique(table.episode_start)


def sensitivity(ckpt: str, dataset: str) -> dict:
    import torch

    from vla_rft.data.chunks import ChunkWindows, load_episode_table
    from vla_rft.policies import load_policy

    torch.set_num_threads(1)
    policy = load_policy(ckpt)
    table = load_episode_table(dataset)
    batch = ChunkWindows(table, policy.spec.chunk_size).batch(_first_frames(table)[:32])
    base = policy.act(batch)[:, 0, :3]
    out = {"checkpoint": ckpt, "dataset": dataset, "frames": len(base), "dims": ["x", "y", "z"]}
    keys = [k for k in batch if k.startswith("observation.")] + ["task"]
    for key in keys:
        swapped = dict(batch)
        swapped[key] = np.roll(np.asarray(batch[key]), 1, axis=0)
        if key == "task":
            swapped[key] = list(swapped[key])
        out[f"swap {key}"] = np.abs(policy.act(swapped)[:, 0, :3] - base).mean(0).astype(np.float64).round(3).tolist()
    labels = batch["action"][:, 0, :3]
    out["label spread"] = np.abs(labels - labels.mean(0)).mean(0).astype(np.float64).round(3).tolist()
    return out


def preset_with(preset: str, overrides: list[str], directory: str) -> str:
    """A YAML copy of a policy preset with ``KEY=VALUE`` overrides (values parsed as YAML)."""
    import yaml

    from vla_rft.config import resolve_preset
    from vla_rft.policies import load_policy_preset

    load_policy_preset(preset)  # a clear error for an unknown preset
    data = yaml.safe_load(resolve_preset(preset, group="policy").read_text()) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, got '{item}'")
        data[key] = yaml.safe_load(value)
    path = f"{directory}/preset.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    load_policy_preset(path)  # unknown keys are named here, before training starts
    return path


def probe(preset: str, dataset: str, steps: int, first_k: int, seed: int = 0) -> dict:
    import torch

    from vla_rft.commands.pretrain import PretrainConfig, build_policy, load_training_table
    from vla_rft.data.chunks import ChunkWindows
    from vla_rft.policies.training import OptimConfig, cosine_lr, make_adamw, set_lr

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = PretrainConfig(datasets=[dataset], policy=preset)
    table = load_training_table(cfg.datasets, None)
    policy = build_policy(cfg, table).train()
    windows = ChunkWindows(table, cfg.chunk_size)
    frames = np.arange(len(table))
    starts = _first_frames(table)
    train_starts, test_starts = starts[:150], starts[150:200]
    pool = frames[((frames - table.episode_start) < first_k) & np.isin(table.episode_start, train_starts)]
    optim = OptimConfig(lr=1e-3, warmup_steps=50)
    optimizer = make_adamw(list(policy.parameters()), optim)
    rng = np.random.default_rng(seed)

    def score(idx: np.ndarray) -> dict:
        policy.eval()
        batch = windows.batch(idx)
        pred, label = policy.act(batch)[:, 0], batch["action"][:, 0]
        policy.train()
        return {"l1_xyz": np.abs(pred - label)[:, :3].mean(0).astype(np.float64).round(3).tolist(),
                "y_sign_acc": round(float(np.mean(np.sign(pred[:, 1]) == np.sign(label[:, 1]))), 3)}

    rows, t0 = [], time.perf_counter()
    for step in range(steps):
        set_lr(optimizer, cosine_lr(step, steps, optim))
        loss, _ = policy.bc_loss(windows.batch(rng.choice(pool, cfg.batch_size)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), optim.grad_clip)
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            rows.append({"step": step + 1, "seconds": round(time.perf_counter() - t0, 1),
                         "train_first_frames": score(train_starts[:64]), "heldout_first_frames": score(test_starts)})
    return {"preset": preset, "dataset": dataset, "first_k": first_k, "train_frames": len(pool), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sensitivity")
    s.add_argument("checkpoint")
    s.add_argument("dataset")
    p = sub.add_parser("probe")
    p.add_argument("preset")
    p.add_argument("dataset")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--first_k", type=int, default=6)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the policy preset, e.g. --set film=true")
    args = parser.parse_args()
    if args.cmd == "sensitivity":
        result = sensitivity(args.checkpoint, args.dataset)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            preset = preset_with(args.preset, args.set, tmp) if args.set else args.preset
            result = probe(preset, args.dataset, args.steps, args.first_k)
            result["preset"], result["overrides"] = args.preset, args.set
    print(json.dumps(result))


if __name__ == "__main__":
    main()
