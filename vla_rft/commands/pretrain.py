"""``vla-rft pretrain``: multi-task behaviour cloning of a policy on LeRobotDatasets.

Reads one or more datasets written by ``vla-rft collect`` (same cameras, image size, state
and action dims), computes the normalization statistics from their frames, and trains the
policy's imitation loss on chunk windows (padded steps past an episode's end are masked out
of the loss). Everything goes to a run directory: ``config.yaml``, ``metrics.jsonl``,
``checkpoints/last`` (+ ``checkpoints/step_<N>`` every ``save_every`` steps) and
``summary.json``. Each checkpoint is a loadable policy (``vla_rft.policies.load_policy``)
that also holds the optimizer and RNG states, so ``--resume RUN_DIR`` continues bit-for-bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_rft.config import require_at_least
from vla_rft.errors import UserInputError
from vla_rft.policies.training import OptimConfig
from vla_rft.trainer import TrainRunOptions, resumed_config


@dataclass
class PretrainConfig(TrainRunOptions):
    """Multi-task behaviour cloning of a policy on LeRobotDatasets."""

    datasets: list[str] = field(default_factory=list)
    """LeRobotDataset roots (from `vla-rft collect`) to train on together. Required."""
    policy: str = "tiny"
    """Policy preset under configs/policy/ (tiny, small, base) or a YAML path."""
    head: str | None = None
    """Override the action head of the preset, gaussian or flow."""
    text_encoder: str | None = None
    """Override the instruction encoder, minilm (the default) or hashing (fast, for tests)."""
    cameras: list[str] | None = None
    """Cameras to train on (by default every camera in the datasets)."""
    chunk_size: int = 8
    """h, actions predicted per chunk."""
    steps: int = 2000
    """Optimizer steps in total (the cosine schedule spans them)."""
    batch_size: int = 64
    """Chunk windows per step, sampled uniformly over every frame of every dataset."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    seed: int = 0
    """Seeds initialization, batch sampling and augmentation."""
    log_every: int = 50
    """Write a metrics.jsonl record every this many steps."""
    save_every: int = 500
    """Keep a checkpoints/step_N every this many steps (0 keeps only checkpoints/last)."""


# ------------------------------------------------------------------------------ data
def concat_tables(tables: list[Any], roots: list[str], cameras: list[str]) -> Any:
    """One :class:`EpisodeTable` over several datasets (episodes kept apart, tasks merged)."""
    from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY
    from vla_rft.data.chunks import EpisodeTable
    from vla_rft.data.lerobot_io import DONE_KEY, REWARD_KEY, SUCCESS_KEY

    first = tables[0]
    for t, root in zip(tables, roots):
        missing = [c for c in cameras if c not in t.cameras]
        if missing:
            raise UserInputError(f"dataset '{root}' has no camera '{missing[0]}' (it has {t.cameras})")
        for key in [IMAGE_PREFIX + c for c in cameras] + [STATE_KEY, ACTION_KEY]:
            if t.arrays[key].shape[1:] != first.arrays[key].shape[1:]:
                raise UserInputError(f"dataset '{root}': '{key}' has shape {t.arrays[key].shape[1:]}, "
                                 f"'{roots[0]}' has {first.arrays[key].shape[1:]}")
    tasks = sorted({task for t in tables for task in t.tasks})
    keys = [IMAGE_PREFIX + c for c in cameras] + [STATE_KEY, ACTION_KEY]
    keys += [k for k in (REWARD_KEY, SUCCESS_KEY, DONE_KEY) if all(k in t.arrays for t in tables)]  # offline RL's labels
    arrays = {k: np.concatenate([t.arrays[k] for t in tables]) for k in keys}
    if any("intervention" in t.arrays for t in tables):  # deployed episodes' operator takeovers (RLIF)
        arrays["intervention"] = np.concatenate([t.arrays["intervention"].reshape(-1).astype(bool)
                                                 if "intervention" in t.arrays else np.zeros(len(t), bool)
                                                 for t in tables])
    arrays["task_index"] = np.concatenate(
        [np.array([tasks.index(t.tasks[i]) for i in t.arrays["task_index"]], dtype=np.int64) for t in tables])
    offsets = np.cumsum([0] + [len(t) for t in tables])
    ep_offsets = np.cumsum([0] + [int(t.arrays["episode_index"].max()) + 1 for t in tables])
    arrays["episode_index"] = np.concatenate([t.arrays["episode_index"] + e for t, e in zip(tables, ep_offsets)])
    return EpisodeTable(
        arrays=arrays, tasks=tasks,
        episode_start=np.concatenate([t.episode_start + o for t, o in zip(tables, offsets)]),
        episode_end=np.concatenate([t.episode_end + o for t, o in zip(tables, offsets)]),
        fps=first.fps,
    )


def load_training_table(roots: list[str], cameras: list[str] | None) -> Any:
    from vla_rft.data.chunks import load_episode_table

    if not roots:
        raise UserInputError("--datasets is required: one or more LeRobotDataset roots, e.g. --datasets '[data/a,data/b]'")
    tables = [load_episode_table(r) for r in roots]
    return concat_tables(tables, list(roots), list(cameras) if cameras else tables[0].cameras)


def task_names(instructions: list[str]) -> list[str]:
    """The sims tasks whose instructions the data holds (sorted; unknown instructions are skipped)."""
    import sims

    by_instruction = {i: t.name for t in sims.list_tasks() for i in t.instructions}
    return sorted({by_instruction[i] for i in instructions if i in by_instruction})


# ------------------------------------------------------------------------------ policy
def build_policy(cfg: PretrainConfig, table: Any) -> Any:
    """The preset's policy with its interface filled from the data and stats computed from it."""
    from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY
    from vla_rft.policies import Normalizer, load_policy_preset, make_policy

    policy_type, model_cfg = load_policy_preset(cfg.policy)
    cams = [k[len(IMAGE_PREFIX):] for k in table.arrays if k.startswith(IMAGE_PREFIX)]
    model_cfg.cameras = sorted(cams)
    model_cfg.image_size = list(table.arrays[IMAGE_PREFIX + model_cfg.cameras[0]].shape[1:3])
    model_cfg.state_dim = int(table.arrays[STATE_KEY].shape[1])
    model_cfg.action_dim = int(table.arrays[ACTION_KEY].shape[1])
    model_cfg.chunk_size = cfg.chunk_size
    if cfg.head is not None:
        model_cfg.head = cfg.head
    if cfg.text_encoder is not None:
        model_cfg.text_encoder = cfg.text_encoder
    normalizer = Normalizer.from_data(table.arrays[STATE_KEY], table.arrays[ACTION_KEY])
    return make_policy(policy_type, model_cfg, normalizer)


def _resumed_config(cfg: PretrainConfig) -> PretrainConfig:
    return resumed_config(PretrainConfig, cfg, "pretrain")


# ------------------------------------------------------------------------------ training
def train(cfg: PretrainConfig) -> dict[str, Any]:
    """Run (or resume) behaviour cloning on the shared trainer; returns the summary written to summary.json."""
    import torch

    from vla_rft.algorithms.bc import BC
    from vla_rft.checkpoint import load_checkpoint
    from vla_rft.data.chunks import ChunkWindows
    from vla_rft.policies import policy_from_checkpoint
    from vla_rft.run import open_run
    from vla_rft.seeding import seed_everything
    from vla_rft.trainer import Trainer, TrainerConfig, fit_in_run

    _check(cfg)
    torch.set_num_threads(cfg.num_threads)
    np_rng = seed_everything(cfg.seed)
    table = load_training_table(cfg.datasets, cfg.cameras)
    windows = ChunkWindows(table, cfg.chunk_size)
    if cfg.logging.name is None:
        cfg.logging.name = f"pretrain-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run = open_run("pretrain", cfg, cfg.logging, resume=cfg.resume is not None)
    ckpt = None
    if cfg.resume is not None:
        ckpt = load_checkpoint(run.checkpoints / "last", kind="policy", device=cfg.device)
        policy = policy_from_checkpoint(ckpt, f"checkpoint '{run.checkpoints / 'last'}'").to(cfg.device).train()
    else:
        policy = build_policy(cfg, table).to(cfg.device).train()
    algo = BC(policy, windows, cfg.optim, cfg.steps, cfg.batch_size, np_rng)
    tcfg = TrainerConfig(iterations=cfg.steps, save_every=cfg.save_every or cfg.steps, keep_every=cfg.save_every,
                         log_every=cfg.log_every, stop_at=cfg.stop_at)
    trainer = Trainer("pretrain", algo, tcfg, run, np_rng, desc="pretrain")
    trainer.extra["pretrain_tasks"] = task_names(table.tasks)  # finetune evaluates retention on these
    result = fit_in_run(trainer, run, ckpt)
    losses = algo.losses
    summary = {
        "run_dir": str(run.path), "checkpoint": str(run.checkpoints / "last"), "step": result["iteration"],
        "finished": result["finished"], "params": policy.num_parameters(), "frames": len(table),
        "episodes": len(np.unique(table.arrays["episode_index"])), "tasks": table.tasks,
        "loss_first": float(np.mean(losses[:20])) if losses else None,
        "loss_last": float(np.mean(losses[-20:])) if losses else None,
        "train_seconds": result["train_seconds"],
    }
    run.write_summary(summary)
    return summary


def _check(cfg: PretrainConfig) -> None:
    require_at_least(cfg, ("steps", "batch_size", "chunk_size", "log_every", "num_threads"), error=UserInputError)
    if cfg.save_every < 0:
        raise UserInputError(f"--save_every must be >= 0, got {cfg.save_every}")
    if cfg.stop_at is not None and cfg.stop_at < 1:
        raise UserInputError(f"--stop_at must be >= 1, got {cfg.stop_at}")


def run(cfg: PretrainConfig) -> int:
    """CLI entry: train (or resume), then print the summary (one JSON object with --json)."""
    from vla_rft.cli import print_json
    from vla_rft.data.lerobot_io import open_dataset  # noqa: F401  (sets HF_HUB_OFFLINE first)

    if cfg.resume is not None:
        cfg = _resumed_config(cfg)
    _quiet_datasets()
    summary = train(cfg)
    if cfg.json:
        print_json(summary)
    else:
        state = "finished" if summary["finished"] else "stopped (resumable)"
        loss = (f"loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f}; "
                if summary["loss_last"] is not None else "")
        print(f"pretrain {state} at step {summary['step']}: {loss}{summary['params']:,} parameters; "
              f"checkpoint {summary['checkpoint']}")
    return 0


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
