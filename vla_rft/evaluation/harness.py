"""The evaluation harness: the ruler every result in this project is read from.

Seeded and deterministic: episode ``i`` of task ``T`` is reset with ``seed + i`` whatever the
number of parallel envs, so the same policy and seed give the same episodes. Episodes run in
batches on a gymnasium vector env; the policy is queried for a chunk of ``h`` actions and the
chunk is executed open-loop for ``replan`` steps (default: the whole chunk). Every success
rate is reported with its Wilson 95% interval and episode count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vla_rft.evaluation.stats import wilson_interval


class ChunkPolicy(Protocol):
    """What the harness needs from a policy: a chunk of actions for a batch of observations."""

    def act(self, obs: dict[str, Any], deterministic: bool = True) -> Any:  # (B, h, A)
        ...


@dataclass
class EvalSettings:
    """How episodes are run."""

    episodes: int = 100
    """Episodes per task."""
    seed: int = 0
    """Episode i of each task is reset with seed + i."""
    num_envs: int = 8
    """Episodes run side by side (a batch for the policy)."""
    vector: str = "sync"
    """'sync' (one process) or 'async' (one subprocess per env) gymnasium vector env."""
    perturbation: str = "none"
    """Perturbation level(s) applied to every episode (see `vla-rft tasks`)."""
    image_size: int = 64
    """Camera resolution."""
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Cameras the policy sees."""
    replan: int | None = None
    """Execute this many actions of each chunk before re-querying (default: the whole chunk)."""
    deterministic: bool = True
    """Use the policy's mean action (True) or sample (False): episode i's samples come from its own
    generator seeded with seed + i, so they do not depend on num_envs (policies whose act takes a generator)."""
    videos: int = 0
    """Record the first N episodes of each task as mp4 (front camera)."""


@dataclass
class TaskResult:
    task: str
    successes: int
    episodes: int
    mean_length: float
    lengths: list[int]
    outcomes: list[bool]

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def as_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.successes, self.episodes)
        return {"success_rate": self.success_rate, "episodes": self.episodes, "successes": self.successes,
                "ci95": [lo, hi], "mean_length": self.mean_length}


def make_vector_env(task: str, n: int, settings: EvalSettings, *, obs_mode: str = "rgb"):
    """A gymnasium vector env of ``n`` copies of ``task`` (see :func:`sims.make_vec_env`)."""
    import sims

    return sims.make_vec_env(task, n, settings.vector, obs_mode=obs_mode, cameras=list(settings.cameras),
                             image_size=settings.image_size, perturbation=settings.perturbation)


def run_task(policy: ChunkPolicy, task: str, settings: EvalSettings, *, video_dir: str | os.PathLike | None = None,
             reset_hook=None, progress=None) -> TaskResult:
    """Run ``settings.episodes`` seeded episodes of ``task``; returns per-episode outcomes.

    ``reset_hook(env, indices)`` is called after each batch reset (stateful policies, e.g.
    scripted experts, use it to reset their per-env state); ``progress(n)`` after each batch of
    ``n`` finished episodes (a progress bar).
    """
    n_total = settings.episodes
    outcomes: list[bool] = []
    lengths: list[int] = []
    n_envs = min(settings.num_envs, n_total)
    env = make_vector_env(task, n_envs, settings)
    try:
        for start in range(0, n_total, n_envs):
            b = min(n_envs, n_total - start)
            seeds = [settings.seed + start + j for j in range(n_envs)]
            ok, ln, frames = _run_batch(policy, env, seeds, settings, reset_hook)
            outcomes += ok[:b]
            lengths += ln[:b]
            if video_dir is not None:
                for j in range(b):
                    if start + j < settings.videos:
                        _write_video(Path(video_dir) / f"{task}_ep{start + j:03d}_{'success' if ok[j] else 'fail'}.mp4",
                                     frames[j])
            if progress is not None:
                progress(b)
    finally:
        env.close()
    return TaskResult(task, int(sum(outcomes)), n_total, float(np.mean(lengths)), lengths, outcomes)


def stochastic_act(policy: Any, obs: dict[str, Any], generators: list[Any], rows: np.ndarray) -> np.ndarray:
    """Sampled chunks of ``rows`` (zeros elsewhere), each row drawn alone from its own generator,
    so an episode's samples depend on its seed only, not on which episodes share the batch."""
    out: np.ndarray | None = None
    for j in rows:
        row = {k: v[j:j + 1] for k, v in obs.items()}
        chunk = np.asarray(policy.act(row, deterministic=False, generator=generators[j]), dtype=np.float32)
        if out is None:
            out = np.zeros((len(obs["task"]), *chunk.shape[1:]), np.float32)
        out[j] = chunk[0]
    assert out is not None
    return out


def _generators(policy: Any, seeds: list[int]) -> list[Any]:
    import inspect

    import torch

    if "generator" not in inspect.signature(policy.act).parameters:
        from vla_rft.errors import UserInputError

        raise UserInputError(f"{type(policy).__name__}.act takes no generator: it cannot be evaluated stochastically "
                             "with seeded samples (use deterministic evaluation)")
    return [torch.Generator().manual_seed(int(seed) * 7_919 + 17) for seed in seeds]


def _run_batch(policy: ChunkPolicy, env, seeds: list[int], s: EvalSettings, reset_hook):
    n = len(seeds)
    gens = None if s.deterministic else _generators(policy, seeds)
    obs, _ = env.reset(seed=seeds)
    if reset_hook is not None:
        reset_hook(env, list(range(n)))
    active = np.ones(n, dtype=bool)
    success = np.zeros(n, dtype=bool)
    length = np.zeros(n, dtype=np.int64)
    record = s.videos > 0 and seeds[0] - s.seed < s.videos
    frames: list[list[np.ndarray]] = [[] for _ in range(n)]
    queue: np.ndarray | None = None
    q_pos = 0
    while active.any():
        if queue is None or q_pos >= (s.replan or queue.shape[1]):
            if gens is None:
                queue = np.asarray(policy.act(obs, deterministic=True), dtype=np.float32)
            else:
                queue = stochastic_act(policy, obs, gens, np.flatnonzero(active))
            q_pos = 0
        if record:
            for j in np.flatnonzero(active):
                frames[j].append(obs["observation.images.front"][j].copy())
        obs, _, term, trunc, info = env.step(queue[:, q_pos])
        q_pos += 1
        step_success = np.asarray(info["is_success"], dtype=bool)
        success |= step_success & active
        length += active
        done = (term | trunc) & active
        active &= ~done
        # A finished env is auto-reset by the vector env on its next step; its steps no longer count.
    return success.tolist(), length.tolist(), frames


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import imageio.v3 as iio

    if not frames:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), plugin="pyav", fps=fps, codec="libx264")


def evaluate(policy: ChunkPolicy, tasks: list[str], settings: EvalSettings, *,
             video_dir: str | os.PathLike | None = None, reset_hook=None, progress=None,
             episodes: dict[str, int] | None = None) -> dict[str, Any]:
    """Evaluate on each task; the overall rate pools all episodes.

    ``episodes`` overrides ``settings.episodes`` per task (e.g. more on a target than on
    retention tasks); ``progress(n)`` is called as episodes finish."""
    import dataclasses

    results = [run_task(policy, t, dataclasses.replace(settings, episodes=(episodes or {}).get(t, settings.episodes)),
                        video_dir=video_dir, reset_hook=reset_hook, progress=progress) for t in tasks]
    succ = sum(r.successes for r in results)
    n = sum(r.episodes for r in results)
    lo, hi = wilson_interval(succ, n)
    return {
        "success_rate": succ / n, "episodes": n, "successes": succ, "ci95": [lo, hi],
        "per_task": {r.task: r.as_dict() for r in results},
        "seed": settings.seed, "perturbation": settings.perturbation,
    }
