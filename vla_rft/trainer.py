"""The trainer every fine-tuning route runs on: behaviour cloning, PPO, GRPO (and what comes next).

One loop, read top to bottom in :meth:`Trainer.fit`::

    for each iteration:  batch = algo.collect(it)          # rollouts from a source, or BC windows
                         metrics = algo.update(batch, it, progress, rng)
                         log -> periodic evaluation (harness) -> checkpoint (last, best, step_N)

- **One budget**: ``iterations`` and an optional wall-clock ``minutes``; the learning-rate
  schedule follows *progress*, the larger of the two fractions spent, so the schedule ends when
  the run does whatever the machine's speed.
- **One resume path**: a checkpoint holds the policy, the optimizer, every RNG (python, numpy
  global and the run's Generator, torch CPU and CUDA), the counters, and the algorithm's own
  state (stateful loss terms and forgetting modules, :mod:`vla_rft.algorithms.forgetting`), so a
  killed run resumed from ``checkpoints/last`` logs what an uninterrupted one does (tested for
  BC, PPO and GRPO). Data iterators are functions of the iteration index and the saved RNGs.
- Progress bar on a terminal; when stderr is not a terminal (a log file, CI), one line per
  evaluation instead. ``metrics.jsonl`` and wandb through :class:`vla_rft.run.RunDir`.

An **algorithm** is any object with ``policy``, ``optimizer``, ``terms``, ``collect(it)``,
``update(batch, it, progress, rng)``, ``env_steps(batch)`` and ``batch_metrics(batch, seconds)``
(:class:`Algorithm`); the CLI modules only build the config, the algorithm and call ``fit``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from vla_rft.run import LoggingConfig


@dataclass
class TrainRunOptions:
    """The options every training command shares (``pretrain``, ``finetune``)."""

    stop_at: int | None = None
    """Stop after this iteration with a resumable checkpoint, as if interrupted (schedule unchanged)."""
    resume: str | None = None
    """Resume the run in this run directory from its checkpoints/last, with its stored config."""
    num_threads: int = 1
    """torch CPU threads (1 by default, as 2 contending threads ran 5x slower on the shared 2-core machine)."""
    device: str = "cpu"
    """torch device."""
    json: bool = False
    """Print one JSON object (the run summary) on stdout."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Run directory and wandb settings."""


C = TypeVar("C", bound=TrainRunOptions)


def resumed_config(cls: type[C], cfg: C, command: str) -> C:
    """The stored config of the run in ``cfg.resume``; only ``stop_at`` and ``json`` come from the
    command line (anything else would change what the resumed run computes)."""
    import yaml

    from vla_rft.config import from_dict

    run_dir = Path(cfg.resume or "")
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a {command} run directory (no config.yaml)")
    resumed = from_dict(cls, yaml.safe_load(stored.read_text()))
    resumed.stop_at, resumed.json, resumed.resume = cfg.stop_at, cfg.json, str(run_dir)
    resumed.logging.root, resumed.logging.name = str(run_dir.parent), run_dir.name
    return resumed


@dataclass
class TrainerConfig:
    """The loop's budget and its logging / evaluation / checkpoint cadence."""

    iterations: int
    minutes: float | None = None
    eval_every: int = 0  # 0: no periodic evaluation (one after the last iteration if an evaluator is given)
    save_every: int = 10  # checkpoints/last every this many iterations, and at the end
    keep_every: int = 0  # also keep checkpoints/step_<N> every this many (0: never)
    log_every: int = 1
    stop_at: int | None = None  # stop after this iteration, resumable, as if killed (schedule unchanged)


class Algorithm(Protocol):
    policy: Any
    optimizer: Any
    terms: list[Any]

    def collect(self, iteration: int) -> Any: ...

    def update(self, batch: Any, iteration: int, progress: float, rng: np.random.Generator) -> dict[str, float]: ...

    def env_steps(self, batch: Any) -> int: ...

    def batch_metrics(self, batch: Any, seconds: float) -> dict[str, float]: ...


def term_states(terms: list[Any]) -> dict[str, Any]:
    """The tensors of every stateful loss term, as ``term.<name>.<key>``."""
    out: dict[str, Any] = {}
    for term in terms:
        if hasattr(term, "state_dict"):
            out.update({f"term.{term.name}.{k}": v for k, v in term.state_dict().items()})
    return out


def load_term_states(terms: list[Any], tensors: dict[str, Any]) -> None:
    from vla_rft.checkpoint import CheckpointError

    for term in terms:
        if hasattr(term, "load_state_dict"):
            prefix = f"term.{term.name}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not state:
                raise CheckpointError(f"the checkpoint has no state for the loss term '{term.name}'")
            term.load_state_dict(state)


class Trainer:
    """Runs an :class:`Algorithm` under a :class:`TrainerConfig` in a run directory.

    Args:
        name: the route (``pretrain``, ``finetune``); written into checkpoints and checked on resume.
        algo: the algorithm.
        cfg: budget and cadence.
        run: the run directory (:func:`vla_rft.run.open_run`).
        rng: the run's numpy Generator (minibatch shuffles, BC sampling); saved in checkpoints.
        evaluate: ``evaluate(policy) -> flat metrics``; with ``eval/success_rate`` the best is kept as
            ``checkpoints/best`` (None: never evaluate).
        desc: the progress bar's label.
    """

    def __init__(self, name: str, algo: Algorithm, cfg: TrainerConfig, run: Any, rng: np.random.Generator,
                 evaluate: Callable[[Any], dict[str, Any]] | None = None, desc: str | None = None) -> None:
        self.name, self.algo, self.cfg, self.run, self.rng = name, algo, cfg, run, rng
        self.evaluate = evaluate
        self.desc = desc or name
        self.counters = {"iteration": 0, "env_steps": 0}
        self.extra: dict[str, Any] = {"best_success": -1.0, "wall_seconds": 0.0}

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: Path) -> None:
        import torch

        from vla_rft.algorithms.forgetting import export_weights
        from vla_rft.algorithms.losses import NonFiniteLossError
        from vla_rft.policies.training import optimizer_to_checkpoint
        from vla_rft.seeding import get_rng_state

        policy = self.algo.policy
        bad = [n for n, p in policy.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise NonFiniteLossError(f"parameter '{bad[0]}' became non-finite by iteration "
                                     f"{self.counters['iteration']}; stopped without writing {path.name}")
        opt_tensors, opt_meta = optimizer_to_checkpoint(self.algo.optimizer)
        policy.save(path, export_weights(self.algo.terms, policy), step=self.counters["iteration"], counters=dict(self.counters), optimizer=opt_tensors,
                    state=term_states(self.algo.terms) or None, rng=get_rng_state(self.rng),
                    extra={**self.extra, "optimizer": opt_meta, "trainer": self.name})

    def restore(self, ckpt: Any) -> None:
        """Continue from a checkpoint this trainer wrote (the policy's weights are already loaded)."""
        from vla_rft.checkpoint import CheckpointError
        from vla_rft.policies.training import optimizer_from_checkpoint
        from vla_rft.seeding import set_rng_state

        if ckpt.rng is None or not ckpt.extra or ckpt.extra.get("trainer") != self.name:
            raise CheckpointError(f"the checkpoint is not a resumable {self.name} checkpoint")
        optimizer_from_checkpoint(self.algo.optimizer, ckpt.optimizer, ckpt.extra["optimizer"])
        load_term_states(self.algo.terms, ckpt.state or {})
        set_rng_state(ckpt.rng, self.rng)
        self.counters = {"iteration": int(ckpt.counters.get("iteration", ckpt.step)),
                         "env_steps": int(ckpt.counters.get("env_steps", 0))}
        self.extra.update({k: v for k, v in ckpt.extra.items() if k not in ("optimizer", "trainer")})
        self.run.truncate_metrics(self.counters["iteration"])  # a killed run logged past its checkpoint

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Run from the current counters to the end of the budget (or ``stop_at``); returns the
        summary fields: counters, whether it finished and why, the last evaluation, timing."""
        from tqdm import tqdm

        from vla_rft.algorithms.forgetting import after_update, evaluation_weights

        cfg, algo, run = self.cfg, self.algo, self.run
        start = self.counters["iteration"]
        end = min(cfg.iterations, cfg.stop_at) if cfg.stop_at is not None else cfg.iterations
        prior_s = float(self.extra.get("wall_seconds", 0.0))  # training time before this resume
        budget_s = cfg.minutes * 60.0 if cfg.minutes is not None else math.inf
        t_start = time.perf_counter()
        elapsed = lambda: prior_s + time.perf_counter() - t_start
        tty = sys.stderr.isatty()
        timed = math.isfinite(budget_s)  # a wall-clock budget: the bar counts its seconds, not iterations
        bar = tqdm(total=round(budget_s) if timed else end, initial=round(min(prior_s, budget_s)) if timed else start,
                   unit="s" if timed else "it", desc=self.desc, file=sys.stderr, disable=not tty, dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if timed else None)
        last_eval: dict[str, Any] = {}
        out_of_time = False
        try:
            for it in range(start, end):
                t0 = time.perf_counter()
                progress = max(it / cfg.iterations, elapsed() / budget_s)
                batch = algo.collect(it)
                collect_s = time.perf_counter() - t0
                metrics = {f"train/{k}": v for k, v in algo.update(batch, it, progress, self.rng).items()}
                after_update(algo.terms, algo.policy)  # e.g. EMA of the weights
                metrics.update(algo.batch_metrics(batch, collect_s))
                out_of_time = elapsed() >= budget_s
                self.counters = {"iteration": it + 1, "env_steps": self.counters["env_steps"] + algo.env_steps(batch)}
                metrics.update({"env_steps": self.counters["env_steps"], "iteration_seconds": time.perf_counter() - t0,
                                "wall_seconds": elapsed(), "progress": progress})
                final = it + 1 == cfg.iterations or out_of_time
                evaluated = False
                if self.evaluate is not None and ((cfg.eval_every and (it + 1) % cfg.eval_every == 0) or final):
                    with evaluation_weights(algo.terms, algo.policy):  # e.g. EMA's average
                        last_eval, evaluated = self.evaluate(algo.policy), True
                    metrics.update(last_eval)
                    self._report(it + 1, last_eval, tty)
                    score = last_eval.get("eval/success_rate")  # routes without one (a world model) keep no best
                    if score is not None and score > self.extra["best_success"]:
                        self.extra["best_success"] = score
                        self.save(run.checkpoints / "best")
                if (it + 1) % cfg.log_every == 0 or it + 1 == end or evaluated or final:
                    run.log(it + 1, metrics)
                if timed:
                    bar.n = min(round(elapsed()), bar.total)
                else:
                    bar.update(1)
                bar.set_postfix({**({"iter": it + 1} if timed else {}),
                                 **{k.split("/")[-1]: f"{metrics[k]:.3g}" for k in algo_postfix(metrics)}})
                self.extra["wall_seconds"] = round(elapsed(), 3)
                if cfg.keep_every and (it + 1) % cfg.keep_every == 0 and it + 1 != end:
                    self.save(run.checkpoints / f"step_{it + 1:07d}")
                if (it + 1) % cfg.save_every == 0 or it + 1 == end or out_of_time:
                    self.save(run.checkpoints / "last")
                if out_of_time:
                    break
        finally:
            bar.close()
        it_done = self.counters["iteration"]
        return {"iteration": it_done, "env_steps": self.counters["env_steps"],
                "finished": it_done >= cfg.iterations or out_of_time,
                "stopped_by": "minutes" if out_of_time else "iterations",
                "best_success": self.extra["best_success"] if self.extra["best_success"] >= 0 else None,
                "train_seconds": round(time.perf_counter() - t_start, 2), "wall_seconds": round(elapsed(), 2),
                **last_eval}

    def _report(self, iteration: int, ev: dict[str, Any], tty: bool) -> None:
        """One line per evaluation where there is no progress bar (log files, CI)."""
        if tty:
            return
        parts = [f"{'target' if k == 'eval/success_rate' else k.removesuffix('/success_rate').split('/')[-1]} {v:.3f}"
                 for k, v in ev.items() if k.endswith("success_rate")]
        what = "eval success " + ", ".join(parts) if parts else "eval " + ", ".join(  # routes without a success rate
            f"{k.split('/')[-1]} {v:.3g}" for k, v in ev.items() if isinstance(v, float))
        print(f"{self.desc}: iteration {iteration}/{self.cfg.iterations}, env steps {self.counters['env_steps']}: "
              f"{what}", file=sys.stderr, flush=True)


def fit_in_run(trainer: Trainer, run: Any, ckpt: Any = None) -> dict[str, Any]:
    """Restore ``ckpt`` (a resumed run) into ``trainer``, fit, and close the run directory whatever happens."""
    try:
        if ckpt is not None:
            trainer.restore(ckpt)
        return trainer.fit()
    finally:
        run.finish()


def algo_postfix(metrics: dict[str, Any]) -> list[str]:
    """The few metrics the progress bar shows."""
    keys = ("rollout/success_rate", "train/kl_to_start", "train/loss", "train/approx_kl")
    return [k for k in keys if k in metrics and isinstance(metrics[k], float)]
