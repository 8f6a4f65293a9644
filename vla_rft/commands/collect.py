"""``vla-rft collect``: run a task's scripted expert, or a policy, and write a LeRobotDataset.

With ``--policy CKPT`` the episodes are rollouts of that policy (chunk by chunk, sampled from
its action distribution unless ``--deterministic``, optionally with ``--noise`` added to what is
executed), successes and failures alike, each frame labelled with the action that was executed,
the env's reward and the success flag: the data offline RL and world models learn from."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from vla_rft.errors import UserInputError


@dataclass
class CollectConfig:
    """Run the scripted expert of a task (or a policy, --policy) for N seeded episodes and write a
    LeRobotDataset (lerobot's own format, local root) with the contract's features, rewards and success flags."""

    task: str | None = None
    """Task name (see `vla-rft tasks`). Required."""
    episodes: int = 100
    """Number of episodes to run."""
    out: str | None = None
    """Dataset root to create (must not exist). Required."""
    seed: int = 0
    """Episode i is reset with seed + i, so the same seed gives the same dataset."""
    image_size: int = 64
    """Camera resolution (square)."""
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Cameras to record."""
    perturbation: str = "none"
    """Perturbation level(s) - none, visual, semantic, execution, dynamics (comma-separated)."""
    storage: str = "image"
    """'image' (PNG frames in parquet, fast random access) or 'video' (mp4)."""
    noise: float = 0.0
    """DART noise - std of Gaussian noise added to the executed action (the recorded label stays the
    expert's clean action), so demos show how to recover from the policy's own errors. 0 disables."""
    keep_failures: bool = False
    """Also write episodes the expert failed (flagged by next.success); by default only successes (a policy's rollouts are always all written)."""
    policy: str | None = None
    """Roll out this policy checkpoint instead of the expert (every episode written, with the executed actions)."""
    deterministic: bool = False
    """With --policy, play the policy's mode instead of sampling from it."""
    json: bool = False
    """Print one JSON object {"task", "episodes", "success_rate", "out"} on stdout."""


def run(cfg: CollectConfig) -> int:
    from vla_rft.cli import print_json

    result = collect(cfg)
    if cfg.json:
        print_json(result)
    else:
        lo, hi = result["ci95"]
        print(f"{cfg.task}: expert success {result['success_rate']:.1%} of {cfg.episodes} "
              f"(95% CI {lo:.1%}-{hi:.1%}); wrote {result['episodes_written']} episodes to {cfg.out}")
    return 0


def collect(cfg: CollectConfig) -> dict:
    """Run the expert and write the dataset; returns the figures ``run`` reports."""
    import numpy as np

    import sims
    from vla_rft.data.lerobot_io import EpisodeWriter, contract_features
    from vla_rft.evaluation.stats import wilson_interval

    if not cfg.task:
        raise UserInputError(f"--task is required; tasks: {', '.join(s.name for s in sims.list_tasks())}")
    if not cfg.out:
        raise UserInputError("--out is required (a new directory for the dataset)")
    if cfg.noise < 0:
        raise UserInputError(f"--noise must be >= 0, got {cfg.noise}")
    if cfg.episodes < 1:
        raise UserInputError(f"--episodes must be >= 1, got {cfg.episodes}")
    _quiet_datasets()
    env = sims.make_env(cfg.task, obs_mode="rgb", cameras=list(cfg.cameras), image_size=cfg.image_size,
                        perturbation=cfg.perturbation)
    actor = _PolicyActor(cfg, env) if cfg.policy else None
    expert = actor if actor is not None else sims.make_expert(cfg.task, env)
    obs, _ = env.reset(seed=cfg.seed)
    state_dim = int(np.asarray(obs["observation.state"]).shape[0])
    features = contract_features(list(cfg.cameras), (cfg.image_size, cfg.image_size), state_dim,
                                 env.action_space.shape[0], storage=cfg.storage)
    writer = EpisodeWriter(cfg.out, features, fps=int(env.unwrapped.metadata["render_fps"]),
                           robot_type="vla_rft_arm")
    noise_rng = np.random.default_rng([cfg.seed, 1])
    successes = written = 0
    from tqdm import tqdm

    bar = tqdm(range(cfg.episodes), desc=f"collect {cfg.task}", file=sys.stderr, disable=None)
    for ep in bar:
        obs, _ = env.reset(seed=cfg.seed + ep)
        if actor is not None:
            actor.reset(cfg.seed + ep)
        success = False
        frames = []
        while True:
            action = expert(obs)
            executed = action
            if cfg.noise > 0:  # DART: perturb what is executed, record the expert's correction
                executed = np.clip(action + noise_rng.normal(0.0, cfg.noise, action.shape), -1, 1).astype(np.float32)
            if actor is not None:  # a policy's data: the label is what was executed
                action = executed
            nxt, reward, terminated, truncated, info = env.step(executed)
            success = success or bool(info["is_success"])
            frames.append((obs, action, float(reward), bool(info["is_success"]), terminated or truncated))
            obs = nxt
            if terminated or truncated:
                break
        successes += success
        if success or cfg.keep_failures or actor is not None:
            for o, a, r, s, d in frames:
                writer.add_frame(o, a, reward=r, success=s, done=d)
            writer.save_episode()
            written += 1
        bar.set_postfix(success=f"{successes / (ep + 1):.2f}")
    if written:
        writer.finalize()
    env.close()
    from vla_rft.run import warning_log

    warning_log.attach(Path(cfg.out) / "warnings.log")  # lerobot's statistics warnings: kept with the dataset
    rate = successes / cfg.episodes
    lo, hi = wilson_interval(successes, cfg.episodes)
    return {"task": cfg.task, "episodes": cfg.episodes, "success_rate": rate, "out": cfg.out,
            "episodes_written": written, "ci95": [lo, hi], "seed": cfg.seed, "noise": cfg.noise,
            "actor": cfg.policy or "expert"}


class _PolicyActor:
    """A policy played one step at a time: a chunk is sampled (seeded per episode) or its mode
    taken, clipped to the action range, and executed step by step before the next is chosen."""

    def __init__(self, cfg: CollectConfig, env: object) -> None:
        import torch

        from vla_rft.policies import load_policy

        space = env.observation_space  # type: ignore[attr-defined]
        state_dim = int(space["observation.state"].shape[0])
        self.policy = load_policy(cfg.policy, cameras=list(cfg.cameras), state_dim=state_dim,
                                  action_dim=int(env.action_space.shape[0]),  # type: ignore[attr-defined]
                                  image_size=(cfg.image_size, cfg.image_size))
        self.deterministic = cfg.deterministic
        self.gen = torch.Generator()
        self.queue: list = []

    def reset(self, seed: int) -> None:
        self.gen.manual_seed(seed)
        self.queue = []

    def __call__(self, obs: dict) -> object:
        import numpy as np

        if not self.queue:
            batch = {k: (np.asarray(v)[None] if k != "task" else [v]) for k, v in obs.items()}
            chunk = self.policy.act(batch, deterministic=self.deterministic, generator=self.gen)[0]
            self.queue = [a.astype(np.float32) for a in chunk]
        return self.queue.pop(0)


def _quiet_datasets() -> None:
    """Hugging Face datasets prints progress bars for every episode; keep stderr readable."""
    import datasets

    datasets.disable_progress_bars()
