"""``vla-rft world-model train``: learn the world model from LeRobotDatasets on the shared trainer.

Each iteration samples B sequences of K chunk steps (:class:`~world_models.data.ChunkSequences`)
and takes one AdamW step on::

    recon    L1 + MSE of each sequence's first frames through their camera's codec
    latent   MSE of the K-step open-loop latent rollout against the (stop-gradient) encodings
    pixel    L1 of the decoded rollout against the real frames
    state    MSE of the rolled-out normalized state
    success  BCE of the per-chunk success logit against the task's success labels

Pixel losses weigh the foreground (pixels that differ from the camera's median frame over the
data: the arm and the objects) ``1 + loss.foreground`` times the background: at 64 x 64 a cube
is a few pixels, and an unweighted loss reaches a low value by drawing the table without it.

The dynamics is trained on its own predictions (an open-loop rollout, not one-step teacher
forcing), so it learns to correct the drift it will meet when imagining whole episodes. A few
episodes of every dataset are held out: every ``eval_every`` iterations the run logs open-loop
PSNR / SSIM / state error per horizon step and the success head's precision / recall on them, and
saves a PNG of real | imagined frames. Checkpoints, resume, metrics.jsonl and wandb are the
trainer's (:mod:`vla_rft.trainer`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from vla_rft.algorithms.bc import BC
from vla_rft.config import require_at_least
from vla_rft.errors import UserInputError
from vla_rft.policies.training import OptimConfig
from vla_rft.trainer import TrainRunOptions, resumed_config
from world_models.model import WorldModelConfig


@dataclass
class LossWeights:
    """Weights of the world model's loss terms."""

    recon: float = 1.0
    """L1 + MSE reconstruction of the first frames."""
    latent: float = 1.0
    """MSE of the rolled-out latents against the encodings."""
    pixel: float = 1.0
    """L1 of the decoded rollout against the real frames."""
    state: float = 1.0
    """MSE of the rolled-out normalized state."""
    success: float = 0.5
    """BCE of the per-chunk success logit."""
    foreground: float = 10.0
    """Extra pixel weight where a frame differs from its camera's median frame over the data (the arm and
    small objects, a few pixels each, that an unweighted pixel loss blurs away); 0 disables."""


@dataclass
class WorldModelTrainConfig(TrainRunOptions):
    """Train an action-conditioned world model on LeRobotDatasets (demos, policy rollouts, deployed episodes)."""

    data: list[str] = field(default_factory=list)
    """Required. LeRobotDataset roots with success labels (vla-rft collect, collect --policy, deploy)."""
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    """Architecture (cameras, sizes and chunk length are filled from the data and --chunk_size)."""
    chunk_size: int = 8
    """h, actions per dynamics step (the chunk length of the policies the model will imagine)."""
    horizon: int = 4
    """K, chunk steps of open-loop rollout per training sequence."""
    steps: int = 4000
    """Optimizer steps (the learning-rate schedule spans them, or --minutes, whichever ends first)."""
    minutes: float | None = None
    """Wall-clock budget in minutes."""
    batch_size: int = 24
    """Sequences per step."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=200, min_lr_ratio=0.05))
    """AdamW and its warm-up + cosine schedule."""
    loss: LossWeights = field(default_factory=LossWeights)
    """Weights of the loss terms."""
    val_episodes: int = 4
    """Episodes of each dataset held out for the periodic fidelity evaluation (0 for none)."""
    eval_every: int = 500
    """Evaluate on the held-out episodes every this many steps, and after the last."""
    eval_horizon: int = 10
    """Chunk steps of the open-loop fidelity evaluation."""
    save_every: int = 500
    """Write checkpoints/last every this many steps."""
    seed: int = 0
    """Seeds initialization and batch sampling."""


def _check(cfg: WorldModelTrainConfig) -> None:
    if not cfg.data:
        raise UserInputError("--data is required: LeRobotDataset roots, e.g. --data '[data/expert,data/rollouts]'")
    require_at_least(cfg, ("chunk_size", "horizon", "steps", "batch_size", "eval_horizon", "save_every", "num_threads"),
                     error=UserInputError)
    if cfg.val_episodes < 0 or cfg.eval_every < 0:
        raise UserInputError("--val_episodes and --eval_every must be >= 0")
    if cfg.minutes is not None and not cfg.minutes > 0:
        raise UserInputError(f"--minutes must be > 0, got {cfg.minutes}")


def split_episodes(table: Any, per_dataset_last: int, dataset_of_episode: np.ndarray) -> tuple[Any, Any]:
    """(train, held-out) tables: the last ``per_dataset_last`` episodes of each dataset are held out."""
    ep = table.arrays["episode_index"]
    held = set()
    for d in np.unique(dataset_of_episode):
        eps = np.flatnonzero(dataset_of_episode == d)
        held.update(eps[len(eps) - per_dataset_last:].tolist() if per_dataset_last else [])
    mask = np.isin(ep, sorted(held))
    return subset_frames(table, ~mask), subset_frames(table, mask)


def subset_frames(table: Any, mask: np.ndarray) -> Any:
    """The frames of ``table`` where ``mask`` is set (whole episodes), with episode bounds re-indexed."""
    from vla_rft.data.chunks import EpisodeTable

    idx = np.flatnonzero(mask)
    arrays = {k: v[idx] for k, v in table.arrays.items()}
    ep = arrays["episode_index"]
    bounds = np.flatnonzero(np.diff(ep)) + 1
    starts = np.concatenate([[0], bounds]) if len(ep) else np.zeros(0, np.int64)
    ends = np.concatenate([bounds, [len(ep)]]) if len(ep) else np.zeros(0, np.int64)
    return EpisodeTable(arrays=arrays, tasks=table.tasks, episode_start=np.repeat(starts, ends - starts),
                        episode_end=np.repeat(ends, ends - starts), fps=table.fps)


def median_frames(table: Any, cameras: list[str], samples: int = 512) -> dict[str, np.ndarray]:
    """Each camera's per-pixel median over ``samples`` evenly spaced frames (uint8 (H, W, 3))."""
    from vla_rft.contract import IMAGE_PREFIX

    idx = np.linspace(0, len(table) - 1, min(samples, len(table))).round().astype(np.int64)
    return {c: np.median(table.arrays[IMAGE_PREFIX + c][idx], axis=0).astype(np.uint8) for c in cameras}


def _pixel_weights(x: torch.Tensor, background: torch.Tensor | None, fg: float) -> torch.Tensor:
    """1 + fg where the frame differs from the background by more than 0.1 in some channel."""
    if background is None or fg <= 0:
        return torch.ones_like(x[:, :1])
    return 1.0 + fg * ((x - background).abs().amax(dim=1, keepdim=True) > 0.1).float()


def world_model_loss(model: Any, batch: dict[str, Any], w: LossWeights,
                     background: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch of sequences (see the module docstring); ``background``
    (camera -> float (3, H, W)) turns on the foreground pixel weighting."""
    cams = model.cfg.cameras
    first = batch["frames"][cams[0]]
    bsz, k1 = first.shape[:2]
    x = {c: model.frames_tensor(batch["frames"][c].reshape(bsz * k1, *first.shape[2:])) for c in cams}
    pw = {c: _pixel_weights(x[c], None if background is None else background[c], w.foreground).view(
        bsz, k1, 1, *x[c].shape[2:]) for c in cams}
    z_all = torch.cat([model.codecs[c].encode(x[c]) for c in cams], 1)
    z_all = z_all.view(bsz, k1, *z_all.shape[1:])
    recon = model.decode(z_all[:, 0])  # the first frames (the rollout's decoded frames train the decoder too)
    first_x = {c: x[c].view(bsz, k1, *x[c].shape[1:])[:, 0] for c in cams}
    loss_recon = sum((pw[c][:, 0] * ((recon[c] - first_x[c]).abs() + (recon[c] - first_x[c]).pow(2))).mean()
                     for c in cams) / len(cams)
    targets = z_all[:, 1:].detach()
    states = model.normalize_state(torch.as_tensor(batch["observation.state"]))
    actions = torch.as_tensor(batch["action"], device=model.device)
    valid = torch.as_tensor(batch["valid"], device=model.device).float()
    success = torch.as_tensor(batch["success"], device=model.device).float()
    z, s = z_all[:, 0].detach(), states[:, 0]
    lat, pix, st, suc = [], [], [], []
    for k in range(k1 - 1):
        z, s, logit = model.step(z, s, actions[:, k])
        m = valid[:, k]
        lat.append((z - targets[:, k]).pow(2).flatten(1).mean(1) * m)
        frames = model.decode(z)
        real = {c: x[c].view(bsz, k1, *x[c].shape[1:])[:, k + 1] for c in cams}
        pix.append(sum((pw[c][:, k + 1] * (frames[c] - real[c]).abs()).flatten(1).mean(1) for c in cams) / len(cams) * m)
        st.append((s - states[:, k + 1]).pow(2).mean(1) * m)
        suc.append(F.binary_cross_entropy_with_logits(logit, success[:, k], reduction="none") * m)
    denom = valid.sum().clamp_min(1.0)
    loss_lat = torch.stack(lat).sum() / denom
    loss_pix = torch.stack(pix).sum() / denom
    loss_state = torch.stack(st).sum() / denom
    loss_succ = torch.stack(suc).sum() / denom
    loss = (w.recon * loss_recon + w.latent * loss_lat + w.pixel * loss_pix + w.state * loss_state
            + w.success * loss_succ)
    return loss, {"loss": float(loss), "recon": float(loss_recon), "latent": float(loss_lat),
                  "pixel": float(loss_pix), "state": float(loss_state), "success_bce": float(loss_succ)}


class WorldModelLearning(BC):
    """The trainer's algorithm for the world model: supervised steps (:class:`~vla_rft.algorithms.bc.BC`'s
    loop and schedule) on :func:`world_model_loss`; ``policy`` is the model being trained."""

    def __init__(self, model: Any, sequences: Any, optim: OptimConfig, total_steps: int, batch_size: int,
                 loss: LossWeights, rng: np.random.Generator) -> None:
        super().__init__(model, sequences, optim, total_steps, batch_size, rng)
        self.weights = loss
        self.background = {c: model.frames_tensor(f[None])[0]
                           for c, f in median_frames(sequences.table, model.cfg.cameras).items()}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        self.policy.train()  # evaluations switch it to eval mode
        return world_model_loss(self.policy, batch, self.weights, self.background)


def evaluate_held_out(model: Any, held: Any, horizon: int, image_dir: Path | None, iteration: int
                      ) -> dict[str, Any]:
    """Open-loop fidelity and success-head scores on held-out episodes (flat ``eval/`` metrics)."""
    from world_models.data import ChunkSequences
    from world_models.metrics import open_loop, success_head_scores

    model.eval()
    seqs = ChunkSequences(held, model.cfg.chunk_size, horizon, model.cfg.cameras)
    starts = seqs.episode_starts()
    fid = open_loop(model, seqs, starts)
    heads = success_head_scores(model, ChunkSequences(held, model.cfg.chunk_size, 1, model.cfg.cameras),
                                np.arange(0, len(held), model.cfg.chunk_size))
    out: dict[str, Any] = {f"eval/{k}": v for k, v in heads.items()}
    for k in sorted({0, 1, 3, horizon - 1}):
        if k < len(fid["psnr"]):
            out[f"eval/psnr_h{k + 1}"], out[f"eval/ssim_h{k + 1}"] = fid["psnr"][k], fid["ssim"][k]
            out[f"eval/state_err_h{k + 1}"] = fid["state_err"][k]
    if image_dir is not None:
        save_strip(fid, image_dir / f"open_loop_{iteration:07d}.png")
    return out


def save_strip(fid: dict[str, Any], path: Path, rows: int = 4) -> None:
    """A PNG: for the first ``rows`` sequences, the real frames over the imagined ones, per camera."""
    import imageio.v3 as iio

    lines = []
    for c in fid["real"]:
        for i in range(min(rows, len(fid["real"][c]))):
            lines.append(np.concatenate(list(fid["real"][c][i]), axis=1))
            lines.append(np.concatenate(list(fid["imagined"][c][i]), axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.concatenate(lines, axis=0))


def train(cfg: WorldModelTrainConfig) -> dict[str, Any]:
    """Run (or resume) world-model training; returns the summary written to summary.json."""
    from vla_rft.checkpoint import load_checkpoint
    from vla_rft.commands.pretrain import load_training_table
    from vla_rft.contract import ACTION_KEY, IMAGE_PREFIX, STATE_KEY
    from vla_rft.run import open_run
    from vla_rft.seeding import seed_everything
    from vla_rft.trainer import Trainer, TrainerConfig, fit_in_run
    from world_models.data import ChunkSequences
    from world_models.model import KIND, WorldModel, world_model_from_checkpoint

    _check(cfg)
    torch.set_num_threads(cfg.num_threads)
    rng = seed_everything(cfg.seed)
    table = load_training_table(list(cfg.data), cfg.model.cameras or None)
    dataset_of_episode = _dataset_of_episode(cfg.data)
    train_table, held = split_episodes(table, cfg.val_episodes, dataset_of_episode)
    if len(train_table) == 0:
        raise UserInputError(f"--val_episodes {cfg.val_episodes} holds out every episode of the data")
    mcfg = cfg.model
    mcfg.cameras = sorted(k[len(IMAGE_PREFIX):] for k in table.arrays if k.startswith(IMAGE_PREFIX))
    mcfg.image_size = list(table.arrays[IMAGE_PREFIX + mcfg.cameras[0]].shape[1:3])
    mcfg.state_dim, mcfg.action_dim = int(table.arrays[STATE_KEY].shape[1]), int(table.arrays[ACTION_KEY].shape[1])
    mcfg.chunk_size = cfg.chunk_size
    if any(s % 8 for s in mcfg.image_size):
        raise UserInputError(f"the world model needs image sizes divisible by 8, the data has {mcfg.image_size}")
    sequences = ChunkSequences(train_table, cfg.chunk_size, cfg.horizon, mcfg.cameras)
    if cfg.logging.name is None:
        cfg.logging.name = f"world-model-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run = open_run("world-model train", cfg, cfg.logging, resume=cfg.resume is not None)
    ckpt = None
    if cfg.resume is not None:
        ckpt = load_checkpoint(run.checkpoints / "last", kind=KIND, device=cfg.device)
        model = world_model_from_checkpoint(ckpt, f"checkpoint '{run.checkpoints / 'last'}'").to(cfg.device)
    else:
        states = train_table.arrays[STATE_KEY].astype(np.float64)
        model = WorldModel(mcfg, states.mean(0), np.maximum(states.std(0), 1e-3)).to(cfg.device)
    algo = WorldModelLearning(model, sequences, cfg.optim, cfg.steps, cfg.batch_size, cfg.loss, rng)
    image_dir = run.path / "images"
    evaluate = None
    if len(held) and cfg.eval_every:
        evaluate = lambda m: evaluate_held_out(m, held, cfg.eval_horizon, image_dir, trainer.counters["iteration"])
    tcfg = TrainerConfig(iterations=cfg.steps, minutes=cfg.minutes, eval_every=cfg.eval_every,
                         save_every=cfg.save_every, log_every=10, stop_at=cfg.stop_at)
    trainer = Trainer("world-model", algo, tcfg, run, rng, evaluate, desc="world-model")
    result = fit_in_run(trainer, run, ckpt)
    summary = {"run_dir": str(run.path), "checkpoint": str(run.checkpoints / "last"), "params": model.num_parameters(),
               "frames": len(train_table), "held_out_frames": len(held),
               "episodes": len(np.unique(train_table.arrays["episode_index"])), **result}
    run.write_summary(summary)
    return summary


def _dataset_of_episode(roots: list[str]) -> np.ndarray:
    """The dataset each episode of :func:`load_training_table`'s table comes from (episodes are
    numbered consecutively across datasets in the order given)."""
    import json

    counts = []
    for r in roots:
        info = json.loads((Path(r) / "meta" / "info.json").read_text())
        counts.append(int(info["total_episodes"]))
    return np.repeat(np.arange(len(roots)), counts)


def run(cfg: WorldModelTrainConfig) -> int:
    from vla_rft.cli import print_json
    from vla_rft.commands.pretrain import _quiet_datasets

    if cfg.resume is not None:
        cfg = resumed_config(WorldModelTrainConfig, cfg, "world-model train")
    _quiet_datasets()
    summary = train(cfg)
    if cfg.json:
        print_json(summary)
    else:
        state = "finished" if summary["finished"] else "stopped (resumable)"
        fid = ", ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in summary.items()
                        if k.startswith("eval/") and isinstance(v, float))
        print(f"world-model train {state} at step {summary['iteration']}: {summary['params']:,} parameters; "
              f"{fid or 'no held-out evaluation'}; checkpoint {summary['checkpoint']}")
    return 0
