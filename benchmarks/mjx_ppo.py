"""PPO on MJX: a fresh state-based policy fine-tuned with ``vla-rft finetune --source mjx`` on a
ported task, its success measured before and after on the same MJX episodes (deterministic
actions, Wilson 95% intervals), written as JSON.

    python benchmarks/mjx_ppo.py --iterations 10 --out benchmarks/results/mjx_ppo.json

The policy is the built-in VLA at a small size reading one blank 8x8 camera (the VLA needs at
least one; the mjx source fills it with black, so only ``observation.state`` carries information:
the fake source's convention), identity normalization (contract-range state and actions).
Evaluation seeds (``--eval_seed`` + i) are disjoint from the training seeds the finetune run
draws (``iteration * num_envs + i``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="reach_target")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--num_envs", type=int, default=64)
    p.add_argument("--rollout_len", type=int, default=8)
    p.add_argument("--time_limit", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval_episodes", type=int, default=128)
    p.add_argument("--eval_seed", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default="runs/mjx_ppo")
    p.add_argument("--out", default="benchmarks/results/mjx_ppo.json")
    return p.parse_args()


def write_start_policy(task: str, out: Path, seed: int) -> Path:
    """A fresh small VLA for the task's MJX state (saved as a policy checkpoint directory)."""
    import torch

    from sims.mjx_env import task_state_dim
    from vla_rft.policies import Normalizer, VLAConfig, VLAPolicy

    state_dim = task_state_dim(task)
    cfg = VLAConfig(cameras=["front"], image_size=[8, 8], state_dim=state_dim, action_dim=7, chunk_size=4, dim=64,
                    depth=1, num_heads=2, cnn_channels=[8], image_grid=1, augment=False, init_log_std=-0.5)
    torch.manual_seed(seed)
    VLAPolicy(cfg, Normalizer.identity(state_dim, 7)).save(out)
    return out


def success_on_mjx(policy_dir: Path, task: str, episodes: int, seed: int, time_limit: int) -> dict[str, float]:
    """Deterministic success of the first episode of ``episodes`` MJX envs (seeds seed + i)."""
    from vla_rft.evaluation.stats import wilson_interval
    from vla_rft.policies import load_policy
    from vla_rft.sources.mjx_source import MjxSource
    from world_models.evaluate import run_episodes

    policy = load_policy(str(policy_dir)).eval()
    h = int(policy.spec.chunk_size)
    source = MjxSource(task, episodes, h, cameras=policy.spec.cameras, image_size=int(policy.spec.image_size[0]),
                       env={"max_episode_steps": time_limit})
    success, _ = run_episodes(policy, source, [seed + i for i in range(episodes)], -(-time_limit // h))
    low, high = wilson_interval(int(success.sum()), episodes)
    return {"success_rate": float(success.mean()), "successes": int(success.sum()), "episodes": episodes,
            "ci95": [round(low, 4), round(high, 4)]}


def main() -> int:
    args = parse()
    root = Path(args.root)
    start = write_start_policy(args.task, root / "start", args.seed)
    name = f"ppo-{args.task}-s{args.seed}"
    cmd = ["vla-rft", "finetune", "--policy", str(start), "--task", args.task, "--source", "mjx",
           "--num_envs", str(args.num_envs), "--rollout_len", str(args.rollout_len), "--iterations",
           str(args.iterations), "--time_limit", str(args.time_limit), "--eval_episodes", "0",
           "--optim.lr_policy", str(args.lr), "--optim.lr_noise", str(args.lr), "--seed", str(args.seed),
           "--save_every", str(args.iterations), "--logging.root", str(root), "--logging.name", name,
           "--logging.wandb", "disabled"]
    t0 = time.perf_counter()
    before = success_on_mjx(start, args.task, args.eval_episodes, args.eval_seed, args.time_limit)
    print("before", before, flush=True)
    t1 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("vla-rft")), *cmd[1:]], check=True)
    train_s = time.perf_counter() - t1
    after = success_on_mjx(root / name / "checkpoints" / "last", args.task, args.eval_episodes, args.eval_seed,
                           args.time_limit)
    print("after", after, flush=True)
    metrics = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    rollout = [round(m["rollout/success_rate"], 4) for m in metrics if "rollout/success_rate" in m]
    out = {"task": args.task, "command": " ".join(cmd), "script": " ".join(["python", *sys.argv]),
           "before": before, "after": after, "finetune_wall_s": round(train_s, 1),
           "total_wall_s": round(time.perf_counter() - t0, 1), "rollout_success_per_iteration": rollout,
           "env_steps": int(max(m.get("env_steps", 0) for m in metrics)),
           "note": "2-core CPU shared with other benchmark runs; MJX CG solver, jax.lax.map batching"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
