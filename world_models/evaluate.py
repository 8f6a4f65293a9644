"""``vla-rft world-model eval``: how faithful is the world model, and does it rank policies as the
real simulator does?

- **Fidelity, open loop** (``--data``, held-out episodes): every episode's recorded chunks are
  replayed in the model from its first real frames; PSNR, SSIM and the state's mean absolute
  error per horizon step (chunk boundary), against the real frames. The success head's precision
  / recall against the task's success labels on the same episodes.
- **Closed loop and ranking** (``--policy``, one or more): each policy runs ``--episodes``
  episodes in the real sim through the evaluation harness (deterministic, episode i reset with
  ``--seed + i``, Wilson intervals) and the same episodes in the model (the imagined env resets
  from the same seeds); success in the model against real success per policy, then Pearson,
  Spearman and the mean absolute error across policies.
- **Closed-loop fidelity**: the first ``--videos`` episodes of the first policy run in the real
  sim and in the model from the same seeds, each acting on its own observations; PSNR and the
  state's mean absolute error between the two at every chunk boundary (``closed_loop``: how fast
  imagined and real trajectories drift apart), and side-by-side mp4s (real | imagined, every
  camera, one frame per chunk). PNG curves of the fidelity.

``--json`` prints ``{"fidelity": {"psnr", "ssim", "state_err"}, "policies": [{"policy",
"wm_success", "real_success", "real_ci95"}...], "pearson", "spearman", "mae"}``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_rft.config import require_at_least
from vla_rft.errors import UserInputError


@dataclass
class WorldModelEvalConfig:
    """Fidelity of a world model against recorded episodes, and its policy ranking against the real sim."""

    world_model: str | None = None
    """Required. A world-model checkpoint directory (vla-rft world-model train)."""
    task: str | None = None
    """The task episodes start from (closed loop and ranking). Required with --policy."""
    policy: list[str] = field(default_factory=list)
    """Policy checkpoints to run in the model and in the real sim; random for uniform random actions."""
    episodes: int = 100
    """Episodes per policy, in the real sim and in the model (the same seeds)."""
    seed: int = 300000
    """Episode i is reset with seed + i in both."""
    data: list[str] = field(default_factory=list)
    """Held-out LeRobotDatasets for the open-loop fidelity (episodes the model was not trained on)."""
    horizon: int = 10
    """Chunk steps of the open-loop fidelity."""
    fidelity_episodes: int = 64
    """At most this many episodes of --data for the open-loop fidelity."""
    num_envs: int = 50
    """Episodes run side by side (real and imagined)."""
    videos: int = 3
    """Side-by-side mp4s of the first episodes of the first policy (0 for none)."""
    success_threshold: float = 0.5
    """Success probability at which an imagined episode succeeds."""
    out: str | None = None
    """Directory for eval.json, curves and videos (default runs/world-model-eval-TIME)."""
    threads: int = 1
    """torch CPU threads."""
    json: bool = False
    """Print one JSON object on stdout."""


class RandomChunkPolicy:
    """Uniform random chunks in [-1, 1] (a policy with no skill, the bottom of a ranking)."""

    def __init__(self, chunk_size: int, action_dim: int, seed: int = 0) -> None:
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any], deterministic: bool = True, generator: Any = None) -> np.ndarray:
        return self.rng.uniform(-1, 1, (len(obs["task"]), self.chunk_size, self.action_dim)).astype(np.float32)


def run_episodes(policy: Any, source: Any, seeds: list[int], max_chunks: int, record: int = 0
                 ) -> tuple[np.ndarray, list[dict[str, list[np.ndarray]]]]:
    """The first episode of every env of ``source`` (reset with ``seeds``), acting with the policy's
    deterministic chunk: (success per env, frames and states per chunk boundary of the first
    ``record`` envs)."""
    obs = source.reset(seeds)
    n = len(seeds)
    active, success = np.ones(n, bool), np.zeros(n, bool)
    keys = [*sorted(k for k in obs if k.startswith("observation.images.")), "observation.state"]
    frames = [{c: [obs[c][i]] for c in keys} for i in range(min(record, n))]
    for _ in range(max_chunks):
        step = source.step(np.asarray(policy.act(obs, deterministic=True), np.float32))
        for i in range(len(frames)):
            if active[i]:
                last = step.final_obs.get(i, {k: v[i:i + 1] for k, v in step.obs.items()})
                for c in keys:
                    frames[i][c].append(last[c][0])
        success |= step.success & active
        active &= ~step.done
        obs = step.obs
        if not active.any():
            break
    return success, frames


def _side_by_side(real: dict[str, list[np.ndarray]], imagined: dict[str, list[np.ndarray]], path: Path) -> None:
    import imageio.v3 as iio

    cams = sorted(k for k in real if k.startswith("observation.images."))
    n = max(len(real[cams[0]]), len(imagined[cams[0]]))

    def at(seq: list[np.ndarray], i: int) -> np.ndarray:
        return seq[min(i, len(seq) - 1)]

    rows = [np.concatenate([np.concatenate([at(real[c], i), at(imagined[c], i)], axis=1) for c in cams],
                           axis=0) for i in range(n)]
    big = [np.kron(r, np.ones((4, 4, 1), np.uint8)) for r in rows]  # 4x upscaled for viewing
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(big), plugin="pyav", fps=2, codec="libx264")


def _curves(fid: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, len(fid["psnr"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, label in zip(axes, ("psnr", "ssim", "state_err"), ("PSNR (dB)", "SSIM", "state MAE")):
        ax.plot(ks, fid[key], marker="o")
        ax.set_xlabel("horizon (chunks)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load_policy(name: str, model: Any, seed: int) -> Any:
    from vla_rft.policies import load_policy

    if name == "random":
        return RandomChunkPolicy(model.cfg.chunk_size, model.cfg.action_dim, seed)
    policy = load_policy(name)
    model.check_compatible(policy.spec)
    return policy


def evaluate_world_model(cfg: WorldModelEvalConfig, progress: Any = print) -> dict[str, Any]:
    """Run the evaluation; returns the JSON object (and writes it, curves and videos to the out dir)."""

    import torch

    import sims
    from vla_rft.evaluation.harness import EvalSettings, evaluate
    from world_models.model import load_world_model
    from world_models.source import ImaginedSource

    _check(cfg)
    torch.set_num_threads(cfg.threads)
    model = load_world_model(cfg.world_model)
    out_dir = Path(cfg.out or f"runs/world-model-eval-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"world_model": cfg.world_model, "task": cfg.task}
    if cfg.data:
        result["fidelity"] = _fidelity(model, cfg, out_dir)
        progress("fidelity: PSNR " + ", ".join(f"{v:.1f}" for v in result["fidelity"]["psnr"]) + " dB by horizon step")
    rows = []
    if cfg.policy:
        limit = sims.get_task_class(cfg.task).max_episode_steps
        max_chunks = math.ceil(limit / model.cfg.chunk_size)
        kwargs = {"cameras": list(model.cfg.cameras), "image_size": int(model.cfg.image_size[0])}
        settings = EvalSettings(episodes=cfg.episodes, seed=cfg.seed, num_envs=min(cfg.num_envs, cfg.episodes),
                                image_size=int(model.cfg.image_size[0]), cameras=list(model.cfg.cameras))
        for j, name in enumerate(cfg.policy):
            policy = _load_policy(name, model, cfg.seed)
            real = evaluate(policy, [cfg.task], settings)
            if isinstance(policy, RandomChunkPolicy):
                policy.rng = np.random.default_rng(cfg.seed)
            wm_ok: list[bool] = []
            for start in range(0, cfg.episodes, cfg.num_envs):
                seeds = [cfg.seed + i for i in range(start, min(start + cfg.num_envs, cfg.episodes))]
                source = ImaginedSource(model, cfg.task, len(seeds), kwargs, cfg.success_threshold)
                ok, imagined = run_episodes(policy, source, seeds, max_chunks, cfg.videos if j == 0 and start == 0 else 0)
                source.close()
                wm_ok += ok.tolist()
                if imagined:
                    real_runs = _videos(policy, cfg, kwargs, seeds, max_chunks, imagined, out_dir)
                    result["closed_loop"] = closed_loop_drift(real_runs, imagined)
            row = {"policy": name, "wm_success": float(np.mean(wm_ok)), "real_success": real["success_rate"],
                   "real_ci95": real["ci95"], "episodes": cfg.episodes}
            rows.append(row)
            progress(f"{name}: real {row['real_success']:.1%} [{row['real_ci95'][0]:.1%}, {row['real_ci95'][1]:.1%}], "
                     f"world model {row['wm_success']:.1%} ({cfg.episodes} episodes each)")
    from world_models.metrics import ranking

    result["policies"] = rows
    result.update(ranking([r["wm_success"] for r in rows], [r["real_success"] for r in rows]) if rows
                  else {"pearson": None, "spearman": None, "mae": None})
    result = _finite(result)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out_dir / "summary.json").write_text(json.dumps({"kind": "world-model eval", **result}, indent=2) + "\n")
    return result


def _videos(policy: Any, cfg: WorldModelEvalConfig, kwargs: dict[str, Any], seeds: list[int], max_chunks: int,
            imagined: list[dict[str, list[np.ndarray]]], out_dir: Path) -> list[dict[str, list[np.ndarray]]]:
    """Real rollouts of the same seeds (chunk-level sim source) beside the imagined ones, as
    videos; returns the real recordings (frames and states per chunk boundary)."""
    from vla_rft.sources.vector import VectorEnvSource, _SimEnvFn

    n = len(imagined)
    if isinstance(policy, RandomChunkPolicy):
        policy.rng = np.random.default_rng(cfg.seed)
    sim = VectorEnvSource([_SimEnvFn(str(cfg.task), {"obs_mode": "rgb", **kwargs}) for _ in range(n)],
                          int(policy.chunk_size if isinstance(policy, RandomChunkPolicy) else policy.spec.chunk_size))
    try:
        _, real = run_episodes(policy, sim, seeds[:n], max_chunks, n)
    finally:
        sim.close()
    for i in range(n):
        _side_by_side(real[i], imagined[i], out_dir / "videos" / f"{cfg.task}_seed{seeds[i]}_real_vs_imagined.mp4")
    return real


def closed_loop_drift(real: list[dict[str, list[np.ndarray]]], imagined: list[dict[str, list[np.ndarray]]]
                      ) -> dict[str, Any]:
    """Per chunk boundary k = 0.. (averaged over the episodes still running in both): PSNR of the
    imagined frames against the real ones (mean over cameras), the state's mean absolute error,
    and the number of episodes averaged. At k = 0 both share the sim reset: the state error is 0
    and the PSNR is the codec's reconstruction of the real start frames."""
    import torch

    from world_models.metrics import psnr

    def to(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32).permute(2, 0, 1)[None] / 255.0

    psnrs: dict[int, list[float]] = {}
    errs: dict[int, list[float]] = {}
    for r, m in zip(real, imagined):
        cams = sorted(k for k in r if k.startswith("observation.images."))
        for k in range(min(len(r["observation.state"]), len(m["observation.state"]))):
            psnrs.setdefault(k, []).append(float(np.mean([float(psnr(to(m[c][k]), to(r[c][k]))[0]) for c in cams])))
            errs.setdefault(k, []).append(float(np.abs(np.asarray(m["observation.state"][k], np.float64)
                                                       - np.asarray(r["observation.state"][k], np.float64)).mean()))
    ks = sorted(psnrs)
    return {"psnr": [float(np.mean(psnrs[k])) for k in ks], "state_err": [float(np.mean(errs[k])) for k in ks],
            "count": [len(psnrs[k]) for k in ks], "episodes": len(real)}


def _fidelity(model: Any, cfg: WorldModelEvalConfig, out_dir: Path) -> dict[str, Any]:
    from vla_rft.commands.pretrain import load_training_table
    from world_models.data import ChunkSequences
    from world_models.metrics import open_loop, success_head_scores
    from world_models.train import save_strip

    table = load_training_table(list(cfg.data), list(model.cfg.cameras))
    seqs = ChunkSequences(table, model.cfg.chunk_size, cfg.horizon, model.cfg.cameras)
    starts = seqs.episode_starts()[: cfg.fidelity_episodes]
    fid = open_loop(model, seqs, starts)
    heads = success_head_scores(model, ChunkSequences(table, model.cfg.chunk_size, 1, model.cfg.cameras),
                                np.arange(0, len(table), model.cfg.chunk_size))
    save_strip(fid, out_dir / "open_loop.png")
    out = {k: fid[k] for k in ("psnr", "ssim", "state_err", "count")}
    out["episodes"] = len(starts)
    out.update(heads)
    _curves(out, out_dir / "fidelity.png")
    return out


def _finite(obj: Any) -> Any:
    """NaN (no valid sequence at a horizon step, a constant success column) as JSON null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def _check(cfg: WorldModelEvalConfig) -> None:
    if not cfg.world_model:
        raise UserInputError("--world_model is required: a world-model checkpoint directory")
    if cfg.policy and not cfg.task:
        raise UserInputError("--task is required with --policy (see vla-rft tasks)")
    if not cfg.policy and not cfg.data:
        raise UserInputError("nothing to evaluate: give --policy (ranking) and/or --data (open-loop fidelity)")
    require_at_least(cfg, ("episodes", "horizon", "num_envs", "fidelity_episodes", "threads"), error=UserInputError)
    if cfg.task:
        import sims

        if cfg.task not in [t.name for t in sims.list_tasks()]:
            raise UserInputError(f"unknown task '{cfg.task}' (see vla-rft tasks)")


def run(cfg: WorldModelEvalConfig) -> int:
    from vla_rft.cli import print_json
    from vla_rft.commands.pretrain import _quiet_datasets

    _quiet_datasets()
    result = evaluate_world_model(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if cfg.json:
        print_json(result)
    else:
        if result.get("policies"):
            print(f"{'policy':50s} {'real':>8s} {'model':>8s}")
            for r in result["policies"]:
                print(f"{r['policy'][-50:]:50s} {r['real_success']:8.1%} {r['wm_success']:8.1%}")
            print(f"Pearson {result['pearson']}, Spearman {result['spearman']}, MAE {result['mae']}")
        if "fidelity" in result:
            f = result["fidelity"]
            print("open-loop PSNR by chunk step: " + ", ".join("n/a" if v is None else f"{v:.1f}" for v in f["psnr"]))
            print(f"success head: precision {f['success_precision']:.2f}, recall {f['success_recall']:.2f}")
    return 0
