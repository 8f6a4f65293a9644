"""``vla-rft finetune``: fine-tuning of a policy on one task: online RL (PPO or GRPO on action
chunks) or supervised fine-tuning on demonstrations (``--algo sft --data DIR...``).

Starts from a policy checkpoint (``vla-rft pretrain`` output), collects chunked rollouts on the
target task's vector envs (in process, or on Ray actors with ``--source ray``) or samples
demonstration windows, updates the policy with any forgetting-mitigation modules
(``--regularizers.*``, :mod:`vla_rft.algorithms.forgetting`), evaluates it periodically through
the evaluation harness (target task, retention tasks, and the forward KL to the start on fixed
target-task states), and writes a run directory: ``config.yaml``, ``metrics.jsonl``,
``checkpoints/{last,best,reference}`` (``last``/``best`` are loadable policies that also hold
the optimizer, RNG state and counters; ``reference`` is the frozen starting policy),
``summary.json`` and wandb's offline files.

Exact resume: every iteration's rollouts are a function of the policy weights and the
iteration index (seeded resets, seeded sampling), and minibatch shuffling uses a numpy
Generator saved in the checkpoint, so ``--stop_at N`` then ``--resume RUN_DIR`` logs the same
metrics as an uninterrupted run (tested).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_rft.algorithms.chunked_td import ChunkedTDConfig
from vla_rft.algorithms.forgetting import ForgettingConfig
from vla_rft.algorithms.grpo import GRPOConfig
from vla_rft.algorithms.optim import RLOptimConfig
from vla_rft.algorithms.ppo import PPOConfig
from vla_rft.config import require_at_least
from vla_rft.trainer import TrainRunOptions, resumed_config
from world_models.source import ImaginedConfig


@dataclass
class FinetuneConfig(TrainRunOptions):
    """Online RL fine-tuning of a policy on one task (PPO or GRPO over action chunks)."""

    algo: str = "ppo"
    """Algorithm, ppo, grpo, sft (behaviour cloning on --data) or chunked-td (offline chunked TD on --data)."""
    policy: str | None = None
    """Required. The starting policy checkpoint directory (it is also the reference policy pi_0)."""
    task: str | None = None
    """Required. The task to fine-tune on (see vla-rft tasks)."""
    iterations: int = 100
    """Collect-then-update iterations (the learning-rate schedule spans them); for algo chunked-td the offline updates (0 with --online_steps continues a checkpoint online only)."""
    minutes: float | None = None
    """Wall-clock budget in minutes; the run ends (evaluated, checkpointed) after the iteration that reaches it."""
    num_envs: int = 8
    """PPO parallel envs (GRPO uses grpo.groups x grpo.group_size envs instead)."""
    rollout_len: int = 8
    """PPO rollout length in chunk steps per env and iteration (each chunk is h env steps)."""
    vector: str = "sync"
    """Vector env kind, sync (one process) or async (a subprocess per env)."""
    reward_type: str = "potential"
    """Env reward: potential (shaping difference plus 1 on success, RL4VLA), dense (shaping itself: pays for hovering short of success) or sparse. GRPO uses success."""
    time_limit: int | None = None
    """Override the task's time limit (default the task's own)."""
    perturbation: str = "none"
    """Perturbation level(s) applied to training episodes (see vla-rft tasks)."""
    data: list[str] = field(default_factory=list)
    """LeRobotDataset roots to learn from (algo sft, demonstrations; algo chunked-td, demos, policy rollouts, deployed episodes)."""
    online_steps: int = 0
    """Env steps collected online from --source after the --iterations offline updates (algo chunked-td; 0 is offline only)."""
    sft_batch_size: int = 64
    """Chunk windows per supervised fine-tuning step (algo sft; optim.lr_policy is its learning rate)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO hyperparameters."""
    chunked_td: ChunkedTDConfig = field(default_factory=ChunkedTDConfig)
    """Offline chunked TD hyperparameters (algo chunked-td)."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """GRPO hyperparameters."""
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    """Optimizer, per-group learning rates and schedule."""
    regularizers: ForgettingConfig = field(default_factory=ForgettingConfig)
    """Forgetting-mitigation modules (KL, L2-to-init, EWC, BC replay, LoRA, frozen parts, EMA), any combination."""
    eval_every: int = 10
    """Evaluate every this many iterations, and after the last (0 disables periodic evaluation)."""
    eval_episodes: int = 20
    """Episodes per task and evaluation; 0 turns evaluation off (for a source that is not a sims task)."""
    eval_seed: int = 100000
    """Evaluation episode i uses seed eval_seed + i (kept apart from training seeds)."""
    eval_num_envs: int = 8
    """Evaluation episodes run side by side."""
    retain_tasks: list[str] | None = None
    """Pretraining tasks evaluated alongside the target (retention); default the tasks the policy's checkpoint records it was pretrained on, less the target; [] for none."""
    retain_episodes: int | None = None
    """Episodes per retention task and evaluation (default eval_episodes)."""
    source: str = "sim"
    """Rollout source, sim (MuJoCo vector env in this process, see --vector), ray (the envs split over Ray actors), world-model (imagined envs in --world_model, success-head reward), fake (a numpy toy task for tests), mjx (state-based reach_target / push_cube on MuJoCo MJX, extra mjx, docs/mjx.md; use --eval_episodes 0) or any name registered with vla_rft.sources.register_source."""
    world_model: str | None = None
    """World-model checkpoint for --source world-model (from vla-rft world-model train); fine-tuning inside it takes no real simulator steps."""
    imagined: ImaginedConfig = field(default_factory=ImaginedConfig)
    """The imagined env's starts and reward (--source world-model)."""
    ray_workers: int = 2
    """Ray actors (source ray); the envs are split between them."""
    seed: int = 0
    """Seeds env resets, chunk sampling and minibatch shuffling."""
    save_every: int = 10
    """Write checkpoints/last every this many iterations (and at the end)."""


ALGOS = ("ppo", "grpo", "sft", "chunked-td")
OFFLINE = ("sft", "chunked-td")  # learn from --data, no rollout source


# ------------------------------------------------------------------------------ setup
def _check(cfg: FinetuneConfig) -> None:
    from vla_rft.errors import UserInputError

    if cfg.algo not in ALGOS:
        raise UserInputError(f"--algo must be one of {', '.join(ALGOS)}, got '{cfg.algo}'")
    if cfg.algo in OFFLINE and not cfg.data:
        raise UserInputError(f"--algo {cfg.algo} needs --data: LeRobotDataset roots to learn from")
    if not cfg.policy:
        raise UserInputError("--policy is required: a policy checkpoint directory (from vla-rft pretrain)")
    if not cfg.task:
        raise UserInputError("--task is required (see vla-rft tasks)")
    # --iterations 0 with --online_steps: online only, e.g. an offline chunked-TD checkpoint continuing online
    require_at_least(cfg, ("iterations",), 0 if cfg.online_steps > 0 else 1, error=UserInputError)
    require_at_least(cfg, ("num_envs", "rollout_len", "eval_num_envs", "num_threads", "save_every",
                           "ray_workers", "sft_batch_size"), error=UserInputError)
    if cfg.grpo.reward not in ("success", "return"):
        raise UserInputError(f"--grpo.reward must be success or return, got '{cfg.grpo.reward}'")
    if cfg.algo == "grpo" and cfg.imagined.reward == "similarity" and cfg.grpo.reward != "return":
        raise UserInputError("--imagined.reward similarity pays a dense reward and no success: GRPO must rank "
                             "rollouts by it, add --grpo.reward return")
    if cfg.world_model and cfg.source != "world-model":
        raise UserInputError(f"--world_model is read by --source world-model only (the source is '{cfg.source}')")
    if cfg.online_steps < 0 or (cfg.online_steps and cfg.algo != "chunked-td"):
        raise UserInputError("--online_steps (offline then online) needs --algo chunked-td and a value >= 0")
    if cfg.eval_episodes < 0:
        raise UserInputError(f"--eval_episodes must be >= 0, got {cfg.eval_episodes}")
    if cfg.minutes is not None and not cfg.minutes > 0:
        raise UserInputError(f"--minutes must be > 0, got {cfg.minutes}")
    if cfg.stop_at is not None and cfg.stop_at < 1:
        raise UserInputError(f"--stop_at must be >= 1, got {cfg.stop_at}")


def _num_envs(cfg: FinetuneConfig) -> int:
    return cfg.grpo.groups * cfg.grpo.group_size if cfg.algo == "grpo" else cfg.num_envs


def source_spec(cfg: FinetuneConfig, policy: Any) -> Any:
    """The rollout source's spec: the task's envs rendering what the policy reads."""
    from vla_rft.sources import SourceSpec

    spec = policy.spec
    kwargs: dict[str, Any] = {"obs_mode": "rgb", "cameras": list(spec.cameras), "image_size": int(spec.image_size[0]),
                              "reward_type": "sparse" if cfg.algo in ("grpo", "chunked-td") else cfg.reward_type,
                              "perturbation": cfg.perturbation}
    if cfg.algo == "ppo" and cfg.reward_type == "potential":
        kwargs["potential_gamma"] = cfg.ppo.gamma  # gamma * phi(s') - phi(s): the shaping PPO's discount leaves optimal policies unchanged
    if cfg.time_limit is not None:
        kwargs["max_episode_steps"] = cfg.time_limit
    options = {"world_model": cfg.world_model, **cfg.imagined.options()} if cfg.world_model else {}
    return SourceSpec(str(cfg.task), _num_envs(cfg), int(spec.chunk_size), cfg.vector, kwargs, cfg.ray_workers, options)


def _episode_chunks(cfg: FinetuneConfig, policy: Any) -> int:
    """Chunks that cover one episode of the task's time limit (0 for a task sims does not list)."""
    import sims

    tasks = {t.name: t.max_episode_steps for t in sims.list_tasks()}
    limit = cfg.time_limit or tasks.get(str(cfg.task), 0)
    return math.ceil(limit / policy.spec.chunk_size)


def _max_chunks(cfg: FinetuneConfig, policy: Any) -> int:
    """GRPO rollout cap: enough chunks to cover the task's time limit."""
    return max(cfg.grpo.max_chunks, _episode_chunks(cfg, policy))


def _check_rollout_window(cfg: FinetuneConfig, policy: Any) -> None:
    """Say so (one line) when PPO's window is shorter than an episode: every iteration resets the
    envs, so the steps past the window are never collected (the cut is bootstrapped by the critic)."""
    need = _episode_chunks(cfg, policy)
    if cfg.rollout_len < need:
        h = int(policy.spec.chunk_size)
        print(f"finetune: note: --rollout_len {cfg.rollout_len} ({cfg.rollout_len * h} steps) is shorter than "
              f"{cfg.task}'s episodes ({need * h} steps in chunks of {h}); episodes are cut at the window "
              f"(rollout/first_episode_cut says how many); --rollout_len {need} covers one episode",
              file=sys.stderr)


def _load_policies(cfg: FinetuneConfig, run_dir: Path, resume: bool) -> tuple[Any, Any, Any]:
    """(policy, reference policy, checkpoint or None); the reference is kept in the run dir."""
    from vla_rft.checkpoint import load_checkpoint
    from vla_rft.policies import load_policy, policy_from_checkpoint

    ref_dir = run_dir / "checkpoints" / "reference"
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last", kind="policy", device=cfg.device)
        policy = policy_from_checkpoint(ckpt, f"checkpoint '{run_dir / 'checkpoints' / 'last'}'").to(cfg.device)
        reference = load_policy(ref_dir, device=cfg.device)
    else:
        ckpt = None
        policy = load_policy(cfg.policy, device=cfg.device)
        reference = load_policy(cfg.policy, device=cfg.device)
        reference.save(ref_dir)
    for p in reference.parameters():
        p.requires_grad_(False)
    return policy.eval(), reference.eval(), ckpt


def build_algorithm(cfg: FinetuneConfig, policy: Any, reference: Any, rng: Any, terms: list[Any] | None = None
                    ) -> Any:
    """The trainer's algorithm with the config's forgetting modules (applied to ``policy`` first:
    frozen parts and LoRA change what the optimizer sees): the PPO or GRPO learner on the
    config's rollout source, or behaviour cloning on ``--data`` (sft)."""
    from vla_rft.algorithms.forgetting import build_modules
    from vla_rft.algorithms.grpo import GRPO
    from vla_rft.algorithms.online import OnlineRL
    from vla_rft.algorithms.ppo import PPO
    from vla_rft.sources import make_source

    all_terms = build_modules(cfg.regularizers, policy, reference, cfg.seed) + list(terms or [])
    if cfg.algo == "sft":
        return _build_sft(cfg, policy, reference, rng, all_terms)
    if cfg.algo == "chunked-td":
        from vla_rft.algorithms.chunked_td import ChunkedTD
        from vla_rft.algorithms.forgetting import load_pretrain_windows

        windows = load_pretrain_windows(cfg.data, policy, what="--data")
        source = make_source(cfg.source, source_spec(cfg, policy)) if cfg.online_steps else None
        return ChunkedTD(policy, windows, cfg.chunked_td, rng, all_terms, cfg.seed, source=source,
                         offline_iterations=cfg.iterations, rollout_len=cfg.rollout_len)
    cls, algo_cfg = (PPO, cfg.ppo) if cfg.algo == "ppo" else (GRPO, cfg.grpo)
    if cfg.algo == "ppo" and cfg.source != "world-model":
        _check_rollout_window(cfg, policy)
    learner = cls(policy, reference, algo_cfg, cfg.optim, cfg.iterations, all_terms)
    if cfg.algo == "grpo":
        cfg.grpo.max_chunks = _max_chunks(cfg, policy)
    source = make_source(cfg.source, source_spec(cfg, policy))
    return OnlineRL(learner, source, cfg.rollout_len if cfg.algo == "ppo" else cfg.grpo.max_chunks, cfg.seed)


def total_iterations(cfg: FinetuneConfig, policy: Any) -> int:
    """--iterations, plus the online iterations that collect --online_steps env steps (chunked TD)."""
    per_iteration = _num_envs(cfg) * cfg.rollout_len * int(policy.spec.chunk_size)
    return cfg.iterations + (math.ceil(cfg.online_steps / per_iteration) if cfg.online_steps else 0)


def _build_sft(cfg: FinetuneConfig, policy: Any, reference: Any, rng: Any, terms: list[Any]) -> Any:
    """Behaviour cloning of the policy on target-task demonstrations (the SFT baseline)."""
    from vla_rft.algorithms.bc import BC
    from vla_rft.algorithms.forgetting import load_pretrain_windows
    from vla_rft.policies.training import OptimConfig

    windows = load_pretrain_windows(cfg.data, policy, what="--data")
    o = cfg.optim
    optim = OptimConfig(lr=o.lr_policy, weight_decay=o.weight_decay, betas=list(o.betas), warmup_steps=o.warmup_iters,
                        min_lr_ratio=o.min_lr_ratio, grad_clip=o.grad_clip)
    return BC(policy, windows, optim, cfg.iterations, cfg.sft_batch_size, rng, terms, reference)


def _resumed_config(cfg: FinetuneConfig) -> FinetuneConfig:
    return resumed_config(FinetuneConfig, cfg, "finetune")


def pretraining_tasks(policy_path: str) -> list[str]:
    """The tasks a policy checkpoint records it was pretrained on (``extra.json``'s
    ``pretrain_tasks``, written by ``vla-rft pretrain``); [] when it records none."""
    import json

    from vla_rft.policies.base import resolve_pretrained

    extra = Path(resolve_pretrained(policy_path)) / "extra.json"
    if not extra.is_file():
        return []
    try:
        tasks = json.loads(extra.read_text()).get("pretrain_tasks", [])
    except (json.JSONDecodeError, AttributeError):
        return []  # load_policy reports a corrupt checkpoint with its own error
    return [str(t) for t in tasks] if isinstance(tasks, list) else []


# ------------------------------------------------------------------------------ evaluation
def _evaluate(cfg: FinetuneConfig, policy: Any, reference: Any = None, probe: Any = None) -> dict[str, Any]:
    """Deterministic harness evaluation on the target (and retention) tasks, and the forward KL
    KL(pi_0 || pi) on the fixed target-task ``probe`` states (RL's Razor): flat metrics."""
    import torch

    from vla_rft.algorithms.losses import forward_kl
    from vla_rft.evaluation.harness import EvalSettings, evaluate

    spec = policy.spec
    settings = EvalSettings(episodes=cfg.eval_episodes, seed=cfg.eval_seed, num_envs=cfg.eval_num_envs,
                            vector=cfg.vector, image_size=int(spec.image_size[0]), cameras=list(spec.cameras))
    out: dict[str, Any] = {}
    for task in [str(cfg.task), *cfg.retain_tasks]:
        if task != cfg.task and cfg.retain_episodes is not None:
            settings.episodes = cfg.retain_episodes
        res = evaluate(policy, [task], settings)
        prefix = "eval" if task == cfg.task else f"eval_retention/{task}"
        out[f"{prefix}/success_rate"] = res["success_rate"]
        out[f"{prefix}/ci95_low"], out[f"{prefix}/ci95_high"] = res["ci95"]
        out[f"{prefix}/mean_length"] = res["per_task"][task]["mean_length"]
    if probe is not None:
        with torch.no_grad():
            gen = torch.Generator(device=policy.device).manual_seed(cfg.eval_seed)
            out["eval/kl_forward_target"] = float(forward_kl(policy, reference, probe, gen).mean())
    if cfg.retain_tasks:
        out["eval_retention/mean_success"] = sum(out[f"eval_retention/{t}/success_rate"] for t in cfg.retain_tasks
                                                 ) / len(cfg.retain_tasks)
    return out


# ------------------------------------------------------------------------------ training
def train(cfg: FinetuneConfig, *, extra_terms: list[Any] | None = None) -> dict[str, Any]:
    """Run (or resume) fine-tuning on the shared trainer; returns the summary written to summary.json.

    ``extra_terms`` are loss terms added to those the config asks for (Python API: a new
    forgetting-mitigation method or a test's fault injection)."""
    import torch

    from vla_rft.run import open_run
    from vla_rft.seeding import seed_everything
    from vla_rft.trainer import Trainer, TrainerConfig

    _check(cfg)
    if cfg.retain_tasks is None:
        cfg.retain_tasks = [t for t in pretraining_tasks(str(cfg.policy)) if t != cfg.task]
    torch.set_num_threads(cfg.num_threads)
    np_rng = seed_everything(cfg.seed)
    if cfg.logging.name is None:
        cfg.logging.name = f"finetune-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run = open_run("finetune", cfg, cfg.logging, resume=cfg.resume is not None)
    policy, reference, ckpt = _load_policies(cfg, run.path, cfg.resume is not None)
    algo = build_algorithm(cfg, policy, reference, np_rng, extra_terms)
    probe = algo.probe_states(reference, cfg.eval_seed) if cfg.eval_episodes > 0 else None
    evaluate = (lambda p: _evaluate(cfg, p, reference, probe)) if cfg.eval_episodes > 0 else None
    tcfg = TrainerConfig(iterations=total_iterations(cfg, policy), minutes=cfg.minutes, eval_every=cfg.eval_every,
                         save_every=cfg.save_every, stop_at=cfg.stop_at)
    trainer = Trainer("finetune", algo, tcfg, run, np_rng, evaluate, desc=f"finetune {cfg.algo}")
    start_eval: dict[str, Any] = {}
    try:
        if ckpt is not None:
            trainer.restore(ckpt)
        elif evaluate is not None and cfg.eval_every:  # the starting policy, same seeds: the gain is read from one run
            start_eval = evaluate(reference)
            run.log(0, {**start_eval, "env_steps": 0})
        result = trainer.fit()
    finally:
        algo.close()
        run.finish()
    summary = {"run_dir": str(run.path), "checkpoint": str(run.checkpoints / "last"),
               "best_checkpoint": str(run.checkpoints / "best") if result["best_success"] is not None else None,
               "algo": cfg.algo, "task": cfg.task, "source": cfg.source, **result,
               **{f"start/{k}": v for k, v in start_eval.items()}}
    run.write_summary(summary)
    return summary


def run(cfg: FinetuneConfig) -> int:
    """CLI entry: fine-tune (or resume), print the summary; a NaN/inf loss exits 1 with one line."""
    from vla_rft.algorithms.losses import NonFiniteLossError
    from vla_rft.cli import print_json

    if cfg.resume is not None:
        cfg = _resumed_config(cfg)
    try:
        summary = train(cfg)
    except NonFiniteLossError as e:
        print(f"vla-rft: error: {e}", file=sys.stderr)
        return 1
    if cfg.json:
        print_json(summary)
    else:
        state = "finished" if summary["finished"] else "stopped (resumable)"
        best = summary["best_success"]
        print(f"finetune {cfg.algo} {state} at iteration {summary['iteration']} ({summary['env_steps']} env steps); "
              f"best eval success {best if best is not None else 'n/a'}; checkpoint {summary['checkpoint']}")
    return 0
