"""Online fine-tuning throughput: our PPO loop against Stable-Baselines3 PPO, side by side.

Writes benchmarks/results/finetune_throughput.json and prints a table (see docs/benchmarks.md).

    python benchmarks/bench_finetune_throughput.py                   # 1 warm-up + 20 timed iterations each
    python benchmarks/bench_finetune_throughput.py --iterations 4 --profile true

Both sides run in this one process, one after the other, single-threaded (one torch thread,
llvmpipe with one render thread), on the same env: ``sims`` task ``pick_cube`` with the
reference pretrained policy's cameras and image size (front + wrist, 64x64, as ``vla-rft
collect`` records them) and the same env kwargs (``finetune.source_spec``), 8 envs stepped in
one process. Env steps/s is wall-clock over whole iterations, rollout collection plus update.

- **vla-rft**: the loop of ``vla_rft.commands.finetune.train`` with ``configs/finetune/ppo_tiny.yaml``
  (8 envs x 8 chunks x chunk 8 = 512 env steps per iteration, 2 epochs x 4 minibatches), built
  with its own helpers (``source_spec``, ``build_online``: the OnlineRL algorithm on the sim source),
  and a freshly initialized ``tiny_kp`` VLA whose interface is filled from the env the way
  ``vla-rft pretrain`` fills it from data (throughput does not depend on the weights). Periodic
  evaluation, logging and checkpoints are not part of the loop measured. The timed iterations
  start after the config's value warm-up, so each is a full policy update.
- **SB3**: ``stable_baselines3.PPO("MultiInputPolicy")`` (NatureCNN per camera + the flattened
  state, CombinedExtractor) with ``cnn_output_dim`` chosen so that its trainable parameter count
  is the closest to the VLA's (the frozen instruction encoder is not counted), on a
  ``DummyVecEnv`` of 8 of the same envs (the instruction string is dropped: SB3 takes no text, and
  our instruction embeddings are cached), n_steps 64 (512 env steps per rollout), batch 128
  (4 minibatches), 2 epochs, device cpu, timed with ``model.learn`` after a warm-up ``learn``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT = Path(__file__).resolve().parent / "results" / "finetune_throughput.json"
TARGET_RATIO = 1.5


@dataclass
class BenchFinetuneConfig:
    """Measure full PPO loop env steps/s, vla-rft against Stable-Baselines3 PPO (CNN policy, same params)."""

    task: str = "pick_cube"
    """sims task both loops train on."""
    finetune: str = "ppo_tiny"
    """Fine-tuning preset (configs/finetune/) whose settings both sides use."""
    policy: str = "tiny_kp"
    """Policy preset (configs/policy/) of the vla-rft side."""
    cameras: list[str] = field(default_factory=lambda: ["front", "wrist"])
    """Cameras (the reference pretrained policy's: vla-rft collect's default)."""
    image_size: int = 64
    """Camera resolution (the reference policy's)."""
    text_encoder: str = "hashing"
    """Instruction encoder of the VLA (embeddings are cached per instruction, so minilm only adds its 10 s load)."""
    iterations: int = 20
    """Timed iterations (rollout + update) of each side."""
    warmup: int = 1
    """Untimed iterations of each side before timing."""
    seed: int = 0
    """Seeds weights, env resets and sampling of both sides."""
    num_threads: int = 1
    """torch CPU threads."""
    cpu: int | None = None
    """Pin the process to this CPU core (default: not pinned; one thread either way)."""
    sb3: bool = True
    """Also measure Stable-Baselines3 PPO (needs the bench extra)."""
    env_only: bool = True
    """Also time the same vector env with random actions and no policy (the ceiling of both loops)."""
    profile: bool = False
    """cProfile one more vla-rft iteration after timing and report its top functions (not in the figures)."""
    out: str | None = None
    """Also write the figures as JSON to this path."""
    json: bool = False
    """Print one JSON object with the figures on stdout."""


# ------------------------------------------------------------------------------ setup
def finetune_config(cfg: BenchFinetuneConfig) -> Any:
    """The fine-tuning preset's FinetuneConfig for the task (no evaluation, one thread)."""
    from vla_rft.commands.finetune import FinetuneConfig
    from vla_rft.config import parse_config

    ft = parse_config(FinetuneConfig, ["--config", cfg.finetune, "--task", cfg.task, "--seed", str(cfg.seed),
                                       "--num_threads", str(cfg.num_threads), "--eval_every", "0"], group="finetune")
    if ft.algo != "ppo":
        raise ValueError(f"fine-tuning preset '{cfg.finetune}' is {ft.algo}; this benchmark measures ppo")
    return ft


def policy_interface(task: str, cameras: list[str], image_size: int) -> dict[str, Any]:
    """Cameras, image size, state and action dims as the env gives them (``vla-rft pretrain``
    fills the same fields from the recorded data)."""
    import sims

    env = sims.make_env(task, obs_mode="rgb", cameras=list(cameras), image_size=image_size)
    try:
        space = env.observation_space
        cams = sorted(k.split(".")[-1] for k in space.spaces if k.startswith("observation.images."))
        shape = space[f"observation.images.{cams[0]}"].shape
        return {"cameras": cams, "image_size": [int(shape[0]), int(shape[1])],
                "state_dim": int(space["observation.state"].shape[0]),
                "action_dim": int(env.action_space.shape[0])}
    finally:
        env.close()


def build_vla(preset: str, interface: dict[str, Any], chunk_size: int, text_encoder: str, seed: int) -> Any:
    """A freshly initialized policy of ``preset`` with ``interface`` (eval mode, as finetune loads it)."""
    import torch

    from vla_rft.policies import Normalizer, load_policy_preset, make_policy

    policy_type, model_cfg = load_policy_preset(preset)
    for k, v in interface.items():
        setattr(model_cfg, k, v)
    model_cfg.chunk_size, model_cfg.text_encoder = chunk_size, text_encoder
    torch.manual_seed(seed)
    norm = Normalizer.identity(interface["state_dim"], interface["action_dim"])
    return make_policy(policy_type, model_cfg, norm).eval()


# ------------------------------------------------------------------------------ SB3 side
SB3_KEYS = {"observation.state": "state"}  # SB3's ModuleDict keys may not contain dots


def sb3_key(key: str) -> str:
    return SB3_KEYS.get(key, key.split(".")[-1])


def make_sb3_env(task: str, env_kwargs: dict[str, Any]) -> Any:
    """One sims env with its dict observation as SB3 takes it: images (uint8 HWC) and the state
    under dot-free keys, the instruction string dropped."""
    import gymnasium as gym

    import sims

    class SB3Observation(gym.ObservationWrapper):
        def __init__(self, env: Any) -> None:
            super().__init__(env)
            self.keys = [k for k in env.observation_space.spaces if k != "task"]
            self.observation_space = gym.spaces.Dict({sb3_key(k): env.observation_space[k] for k in self.keys})

        def observation(self, obs: dict[str, Any]) -> dict[str, Any]:
            return {sb3_key(k): obs[k] for k in self.keys}

    return SB3Observation(sims.make_env(task, **env_kwargs))


def sb3_observation_space(space: Any) -> Any:
    """The observation space SB3's policy is built on (images transposed to CHW by VecTransposeImage)."""
    import gymnasium as gym
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    return gym.spaces.Dict({k: VecTransposeImage.transpose_space(s, k)
                            if is_image_space(s) and not is_image_space_channels_first(s) else s
                            for k, s in space.spaces.items()})


def sb3_trainable_params(obs_space: Any, action_space: Any, policy_kwargs: dict[str, Any]) -> int:
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    policy = MultiInputActorCriticPolicy(obs_space, action_space, lambda _: 3e-4, **policy_kwargs)
    return sum(p.numel() for p in policy.parameters() if p.requires_grad)


def sb3_policy_kwargs(obs_space: Any, action_space: Any, target: int, max_dim: int = 4096) -> tuple[dict[str, Any], int]:
    """``policy_kwargs`` of SB3's MultiInputPolicy (default net_arch, NatureCNN per image) whose
    trainable parameter count is the closest to ``target``: the CNN output width is searched
    (the count grows with it). ``obs_space`` is the env's (HWC) space; returns (kwargs, count)."""
    space = sb3_observation_space(obs_space)

    def kwargs(d: int) -> dict[str, Any]:
        return {"features_extractor_kwargs": {"cnn_output_dim": d}}

    lo, hi = 1, max_dim
    while lo < hi:  # smallest d with count >= target
        mid = (lo + hi) // 2
        if sb3_trainable_params(space, action_space, kwargs(mid)) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(lo - 1, 1), lo}, key=lambda d: abs(sb3_trainable_params(space, action_space, kwargs(d)) - target))
    return kwargs(best), sb3_trainable_params(space, action_space, kwargs(best))


def measure_sb3(cfg: BenchFinetuneConfig, ft: Any, env_kwargs: dict[str, Any], chunk_size: int,
                target_params: int) -> dict[str, Any]:
    """SB3 PPO (CNN MultiInputPolicy, matched parameter count) on a DummyVecEnv of the same envs."""
    import stable_baselines3
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    class RolloutTimer(BaseCallback):
        """Seconds spent collecting rollouts (the rest of ``learn`` is the update)."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds, self._t0 = 0.0, 0.0

        def _on_rollout_start(self) -> None:
            self._t0 = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.seconds += time.perf_counter() - self._t0

        def _on_step(self) -> bool:
            return True

    n_envs, n_steps = ft.num_envs, ft.rollout_len * chunk_size
    venv = DummyVecEnv([lambda: make_sb3_env(str(ft.task), env_kwargs) for _ in range(n_envs)])
    policy_kwargs, _ = sb3_policy_kwargs(venv.observation_space, venv.action_space, target_params)
    model = SB3PPO("MultiInputPolicy", venv, n_steps=n_steps, batch_size=n_envs * n_steps // ft.ppo.minibatches,
                   n_epochs=ft.ppo.epochs, gamma=ft.ppo.gamma, gae_lambda=ft.ppo.gae_lambda, clip_range=ft.ppo.clip,
                   clip_range_vf=ft.ppo.value_clip, ent_coef=ft.ppo.ent_coef, vf_coef=ft.ppo.vf_coef,
                   max_grad_norm=ft.optim.grad_clip, policy_kwargs=policy_kwargs, device="cpu", seed=cfg.seed,
                   verbose=0)
    params = sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    per_iter = n_envs * n_steps
    if cfg.warmup:
        model.learn(total_timesteps=cfg.warmup * per_iter)
    start_steps, timer = model.num_timesteps, RolloutTimer()
    load = os.getloadavg()
    t0 = time.perf_counter()
    model.learn(total_timesteps=cfg.iterations * per_iter, reset_num_timesteps=False, callback=timer)
    seconds = time.perf_counter() - t0
    steps = model.num_timesteps - start_steps
    venv.close()
    return {"env_steps_per_s": steps / seconds, "env_steps": int(steps), "seconds": seconds,
            "collect_seconds": timer.seconds, "update_seconds": seconds - timer.seconds,
            "trainable_params": int(params), "load_average_before": load,
            "policy": "MultiInputPolicy (CombinedExtractor: NatureCNN per camera + flattened state)",
            "cnn_output_dim": policy_kwargs["features_extractor_kwargs"]["cnn_output_dim"],
            "net_arch": "SB3 default (pi [64, 64], vf [64, 64], shared features extractor)",
            "n_envs": n_envs, "n_steps": n_steps, "batch_size": n_envs * n_steps // ft.ppo.minibatches,
            "n_epochs": ft.ppo.epochs, "stable_baselines3": stable_baselines3.__version__}


# ------------------------------------------------------------------------------ vla-rft side
def measure_vla(cfg: BenchFinetuneConfig, ft: Any, interface: dict[str, Any], chunk_size: int) -> dict[str, Any]:
    """Our PPO loop (OnlineRL.collect + update, what the trainer runs for finetune) on the sim source."""
    from vla_rft.commands.finetune import build_online, source_spec
    from vla_rft.seeding import seed_everything

    np_rng = seed_everything(ft.seed)
    policy = build_vla(cfg.policy, interface, chunk_size, cfg.text_encoder, ft.seed)
    reference = build_vla(cfg.policy, interface, chunk_size, cfg.text_encoder, ft.seed)
    for p in reference.parameters():
        p.requires_grad_(False)
    first = max(cfg.warmup, ft.ppo.value_warmup_iters)  # timed iterations are full policy updates
    ft.iterations = max(ft.iterations, first + cfg.iterations + 1)  # the lr schedule spans them
    algo = build_online(ft, policy, reference)
    spec = source_spec(ft, policy)

    def iteration(it: int) -> tuple[int, float, float]:
        t0 = time.perf_counter()
        data = algo.collect(it)
        collect_s = time.perf_counter() - t0
        metrics = algo.update(data, it, it / ft.iterations, np_rng)
        metrics.update(algo.batch_metrics(data, collect_s))
        return data.env_steps, collect_s, time.perf_counter() - t0 - collect_s

    try:
        for it in range(cfg.warmup):
            iteration(it)
        load = os.getloadavg()
        steps, collect_s, update_s = 0, 0.0, 0.0
        t0 = time.perf_counter()
        for it in range(first, first + cfg.iterations):
            n, c, u = iteration(it)
            steps, collect_s, update_s = steps + n, collect_s + c, update_s + u
        seconds = time.perf_counter() - t0
        profile = profile_iteration(iteration, first + cfg.iterations) if cfg.profile else None
    finally:
        algo.close()
    return {"env_steps_per_s": steps / seconds, "env_steps": steps, "seconds": seconds,
            "collect_seconds": collect_s, "update_seconds": update_s,
            "trainable_params": policy.num_parameters(), "load_average_before": load,
            "policy": f"{cfg.policy} VLA, {cfg.text_encoder} instruction encoder (frozen, cached)",
            "timed_iterations_from": first, "num_envs": ft.num_envs, "rollout_len_chunks": ft.rollout_len,
            "chunk_size": chunk_size, "epochs": ft.ppo.epochs, "minibatches": ft.ppo.minibatches,
            "env_kwargs": spec.env_kwargs, "profile": profile}


def profile_iteration(iteration: Any, it: int, top: int = 40) -> dict[str, Any]:
    """cProfile one iteration: its seconds and the ``top`` functions by own and by cumulative time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    iteration(it)
    prof.disable()
    total = time.perf_counter() - t0
    rows = [{"function": f"{Path(file).name}:{line}({name})", "calls": calls, "tottime_s": round(tottime, 4),
             "cumtime_s": round(cumtime, 4)}
            for (file, line, name), (_, calls, tottime, cumtime, _) in pstats.Stats(prof).stats.items()]  # type: ignore[attr-defined]
    return {"seconds": total, "top_own": sorted(rows, key=lambda r: -r["tottime_s"])[:top],
            "top_cumulative": sorted(rows, key=lambda r: -r["cumtime_s"])[:top]}


def measure_env_only(spec: Any, vector_steps: int, warmup: int, seed: int) -> dict[str, Any]:
    """The same envs (sims tasks in a SAME_STEP SyncVectorEnv, same kwargs, one action per step)
    stepped ``vector_steps`` times with seeded random actions and no policy: the ceiling of either loop."""
    import gymnasium as gym
    import numpy as np
    from gymnasium.vector import AutoresetMode

    import sims

    env = gym.vector.SyncVectorEnv([lambda: sims.make_env(spec.task, **spec.env_kwargs) for _ in range(spec.num_envs)],
                                   autoreset_mode=AutoresetMode.SAME_STEP)
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed=[seed + i for i in range(spec.num_envs)])

        def steps(n: int) -> None:
            for _ in range(n):
                env.step(rng.uniform(-1, 1, (spec.num_envs, *env.single_action_space.shape)).astype(np.float32))

        steps(warmup)
        t0 = time.perf_counter()
        steps(vector_steps)
        seconds = time.perf_counter() - t0
    finally:
        env.close()
    return {"env_steps_per_s": vector_steps * spec.num_envs / seconds, "env_steps": vector_steps * spec.num_envs,
            "seconds": seconds}


# ------------------------------------------------------------------------------ run
def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "mujoco", "gymnasium", "numpy", "stable-baselines3", "vla-rft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def bench_finetune(cfg: BenchFinetuneConfig) -> dict[str, Any]:
    import torch

    from vla_rft.commands.bench import pin_to_one_core

    if cfg.iterations < 1 or cfg.warmup < 0:
        raise ValueError(f"--iterations must be >= 1 and --warmup >= 0, got {cfg.iterations} and {cfg.warmup}")
    os.environ["LP_NUM_THREADS"] = "1"  # llvmpipe: one render thread (before any GL context exists)
    if cfg.cpu is not None:
        pin_to_one_core(cfg.cpu)
    torch.set_num_threads(cfg.num_threads)
    machine = {"cpu_count": os.cpu_count(), "cpus_allowed": len(os.sched_getaffinity(0)),
               "pinned_cpu": cfg.cpu, "load_average_start": os.getloadavg(), "machine": platform.machine(),
               "processor": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
               "LP_NUM_THREADS": os.environ["LP_NUM_THREADS"], "MUJOCO_GL": os.environ.get("MUJOCO_GL")}
    ft = finetune_config(cfg)
    interface = policy_interface(str(ft.task), cfg.cameras, cfg.image_size)
    chunk_size = 8  # the reference pretraining presets' chunk_size (configs/pretrain/tiny_kp_*.yaml)
    ours = measure_vla(cfg, ft, interface, chunk_size)
    env_only = None
    if cfg.env_only:
        from vla_rft.sources import SourceSpec

        per_iter = ft.rollout_len * chunk_size
        spec = SourceSpec(str(ft.task), ft.num_envs, chunk_size, ft.vector, ours["env_kwargs"])
        env_only = measure_env_only(spec, cfg.iterations * per_iter, cfg.warmup * per_iter, cfg.seed)
    sb3 = measure_sb3(cfg, ft, ours["env_kwargs"], chunk_size, ours["trainable_params"]) if cfg.sb3 else None
    machine["load_average_end"] = os.getloadavg()
    ratio = ours["env_steps_per_s"] / sb3["env_steps_per_s"] if sb3 else None
    return {"what": "full PPO loop (rollout collection + update) env steps/s, wall clock, one process",
            "task": ft.task, "interface": interface, "iterations": cfg.iterations, "warmup": cfg.warmup,
            "env_steps_per_iteration": ft.num_envs * ft.rollout_len * chunk_size, "seed": cfg.seed,
            "finetune_preset": cfg.finetune, "policy_preset": cfg.policy, "vla_rft": ours, "sb3": sb3,
            "env_only": env_only,
            "ratio_vla_rft_vs_sb3": ratio, "target_ratio": TARGET_RATIO,
            "ceiling_ratio_env_only_vs_sb3": env_only["env_steps_per_s"] / sb3["env_steps_per_s"]
            if env_only and sb3 else None,
            "params_ratio_sb3_vs_vla_rft": sb3["trainable_params"] / ours["trainable_params"] if sb3 else None,
            "machine": machine, "versions": _versions()}


def format_table(result: dict[str, Any]) -> str:
    ours, sb3 = result["vla_rft"], result["sb3"]
    cols = [("vla-rft", ours)] + ([("SB3 PPO", sb3)] if sb3 else [])
    lines = [f"{'measure':<22}" + "".join(f"{n:>14}" for n, _ in cols)]
    for label, key, fmt in [("env steps/s", "env_steps_per_s", "{:,.1f}"), ("env steps timed", "env_steps", "{:,}"),
                            ("seconds", "seconds", "{:.2f}"), ("  collecting", "collect_seconds", "{:.2f}"),
                            ("  updating", "update_seconds", "{:.2f}"), ("trainable params", "trainable_params", "{:,}")]:
        lines.append(f"{label:<22}" + "".join(f"{fmt.format(r[key]):>14}" for _, r in cols))
    if result["env_only"]:
        lines.append(f"{'env only, no policy':<22}{result['env_only']['env_steps_per_s']:>14,.1f}  env steps/s")
    if result["ratio_vla_rft_vs_sb3"] is not None:
        lines.append(f"ratio vla-rft / SB3: {result['ratio_vla_rft_vs_sb3']:.2f}x (target >= {result['target_ratio']}x)")
    if result["ceiling_ratio_env_only_vs_sb3"] is not None:
        lines.append(f"ceiling, env only / SB3: {result['ceiling_ratio_env_only_vs_sb3']:.2f}x")
    if ours.get("profile"):
        prof = ours["profile"]
        lines.append(f"vla-rft iteration under cProfile ({prof['seconds']:.2f} s), top by cumulative time:")
        lines += [f"  {r['cumtime_s']:>8.3f} s cum {r['tottime_s']:>8.3f} s own {r['calls']:>8} calls  {r['function']}"
                  for r in prof["top_cumulative"][:20]]
    return "\n".join(lines)


def run(cfg: BenchFinetuneConfig) -> int:
    from vla_rft.checkpoint import atomic_write_text
    from vla_rft.cli import print_json

    result = bench_finetune(cfg)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    if cfg.json:
        print_json(result)
    else:
        print(format_table(result))
        print(f"({cfg.num_threads} thread(s), {cfg.iterations} timed iterations after {cfg.warmup} warm-up, "
              f"load average at start {result['machine']['load_average_start'][0]:.2f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from vla_rft.config import parse_config

    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(RESULT)]
    sys.exit(run(parse_config(BenchFinetuneConfig, args)))
