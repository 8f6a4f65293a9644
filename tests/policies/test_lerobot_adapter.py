"""LeRobot policies through the adapter: trained/saved with LeRobot's own APIs, loaded offline,
run through the Policy interface and the evaluation harness, fine-tuned state round-tripped.

The LeRobot side uses only LeRobot's public training pieces (config class with PolicyFeature
inputs, ``make_pre_post_processors`` with the dataset's statistics, the policy's optimizer
preset, ``LeRobotDataset`` with ``delta_timestamps``, ``save_pretrained``), on a small dataset
written by ``vla-rft collect``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rft.checkpoint import CheckpointError
from vla_rft.contract import ContractError

TASK = "reach_target"
CAMERAS = ["front"]  # the env also renders 'wrist': the policy must only ask for what it reads
CHUNK = 8


# ---------------------------------------------------------------------------------- LeRobot side
@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    from vla_rft.commands.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("lerobot_adapter") / "reach"
    collect(CollectConfig(task=TASK, episodes=10, out=str(root), cameras=list(CAMERAS), seed=0))
    return root


def _features(root: Path):
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features

    meta = LeRobotDatasetMetadata(f"local/{root.name}", root=root)
    feats = dataset_to_policy_features(meta.features)
    inputs = {k: f for k, f in feats.items() if f.type is not FeatureType.ACTION}
    return meta, inputs, {"action": feats["action"]}


def tiny_act_config(root: Path, **overrides):
    from lerobot.policies.act.configuration_act import ACTConfig

    _, inputs, outputs = _features(root)
    kw = {"input_features": inputs, "output_features": outputs, "chunk_size": CHUNK, "n_action_steps": CHUNK,
          "dim_model": 32, "n_heads": 2, "dim_feedforward": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
          "n_vae_encoder_layers": 1, "latent_dim": 8, "vision_backbone": "resnet18",
          "pretrained_backbone_weights": None, "dropout": 0.0, "device": "cpu",
          "optimizer_lr": 3e-4, "optimizer_lr_backbone": 3e-4}
    kw.update(overrides)
    return ACTConfig(**kw)


def tiny_diffusion_config(root: Path):
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    _, inputs, outputs = _features(root)
    return DiffusionConfig(input_features=inputs, output_features=outputs, n_obs_steps=2, horizon=8, n_action_steps=4,
                           drop_n_last_frames=3, down_dims=(16, 32), diffusion_step_embed_dim=16, n_groups=4,
                           kernel_size=3, spatial_softmax_num_keypoints=4, num_train_timesteps=10,
                           num_inference_steps=5, noise_scheduler_type="DDIM", crop_shape=None, device="cpu")


def save_lerobot(policy, root: Path, out: Path) -> Path:
    """LeRobot's save_pretrained layout: config + weights + both processor pipelines."""
    from lerobot.policies.factory import make_pre_post_processors

    meta, _, _ = _features(root)
    pre, post = make_pre_post_processors(policy.config, dataset_stats=meta.stats)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out


def train_act(root: Path, steps: int, seed: int = 0):
    """A few steps of LeRobot-style training: its dataset class, processors, optimizer preset
    and the policy's own loss (L1 + KL with the VAE)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(seed)
    cfg = tiny_act_config(root)
    meta, _, _ = _features(root)
    ds = LeRobotDataset(f"local/{root.name}", root=root,
                        delta_timestamps={"action": [i / meta.fps for i in cfg.action_delta_indices]})
    policy = ACTPolicy(cfg)
    pre, _ = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    optimizer = cfg.get_optimizer_preset().build(policy.get_optim_params())
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    losses: list[float] = []
    policy.train()
    while len(losses) < steps:
        for batch in loader:
            loss, _ = policy.forward(pre(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return policy.eval(), losses


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def act_dir(dataset_root, tmp_path_factory) -> Path:
    """An untrained tiny ACT in LeRobot's format (the fast path for the interface tests)."""
    from lerobot.policies.act.modeling_act import ACTPolicy

    torch.manual_seed(0)
    return save_lerobot(ACTPolicy(tiny_act_config(dataset_root)), dataset_root,
                        tmp_path_factory.mktemp("act") / "pretrained_model")


@pytest.fixture(scope="module")
def act(act_dir):
    from vla_rft.policies.base import load_policy

    return load_policy(act_dir)


def env_obs(batch: int = 3, seed: int = 0) -> dict:
    """Real observations from the task's env (both cameras, as the env renders them)."""
    from vla_rft.evaluation.harness import EvalSettings, make_vector_env

    env = make_vector_env(TASK, batch, EvalSettings(num_envs=batch, cameras=["front", "wrist"]))
    try:
        obs, _ = env.reset(seed=[seed + i for i in range(batch)])
    finally:
        env.close()
    return dict(obs)


# ---------------------------------------------------------------------------------- loading
def test_load_policy_detects_a_lerobot_directory_and_the_prefix(act_dir, act):
    from vla_rft.policies.base import load_policy
    from vla_rft.policies.lerobot import is_lerobot_pretrained_dir
    from vla_rft.policies.lerobot.adapter import LeRobotPolicy

    assert is_lerobot_pretrained_dir(act_dir) and is_lerobot_pretrained_dir(f"lerobot:{act_dir}")
    assert isinstance(act, LeRobotPolicy) and not act.training
    spec = act.spec
    assert (spec.cameras, spec.image_size, spec.state_dim, spec.action_dim, spec.chunk_size) == (CAMERAS, (64, 64), 14, 7, CHUNK)
    prefixed = load_policy(f"lerobot:{act_dir}")
    obs = env_obs(2)
    np.testing.assert_array_equal(prefixed.act(obs), act.act(obs))


def test_act_matches_lerobots_own_pipeline_in_env_units(act_dir, act):
    """preprocessor -> ACTPolicy.predict_action_chunk -> postprocessor, straight from LeRobot."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    obs = env_obs(3)
    ref = ACTPolicy.from_pretrained(str(act_dir))
    pre, post = make_pre_post_processors(ref.config, pretrained_path=str(act_dir))
    batch = {"observation.images.front": torch.from_numpy(obs["observation.images.front"]).permute(0, 3, 1, 2) / 255.0,
             "observation.state": torch.from_numpy(obs["observation.state"]), "task": list(obs["task"])}
    expected = post(ref.predict_action_chunk(pre(batch))).numpy()
    chunk = act.act(obs)
    assert chunk.shape == (3, CHUNK, 7) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk, np.clip(expected, -1, 1), atol=1e-5)
    np.testing.assert_allclose(act.lerobot_chunk(obs), expected, atol=1e-5)
    np.testing.assert_array_equal(act.act(obs), chunk)  # deterministic


def test_rl_interface_log_probs_entropy_value(act):
    obs = env_obs(4)
    chunk, logp = act.sample(obs, torch.Generator().manual_seed(0))
    assert chunk.shape == (4, CHUNK, 7) and logp.shape == (4,) and torch.all(torch.isfinite(logp))
    torch.testing.assert_close(act.log_prob(obs, chunk), logp, atol=1e-3, rtol=1e-5)
    latent, logp2 = act.sample_latent(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(logp2, logp)
    torch.testing.assert_close(act.latent_to_chunk(latent), chunk)
    ev = act.evaluate(obs, latent)
    torch.testing.assert_close(ev.step_log_prob.sum(-1), logp, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(ev.step_entropy.sum(-1), act.entropy(obs))
    assert ev.value.shape == (4,) and torch.all(torch.isfinite(ev.value))
    with torch.no_grad():  # the mean of the samples is the deterministic chunk
        samples = torch.stack([act.sample(obs, torch.Generator().manual_seed(s))[0] for s in range(64)])
    mean_env = torch.from_numpy(act.lerobot_chunk(obs))
    scale = torch.from_numpy(act.normalizer.action_high - act.normalizer.action_low) / 2
    assert torch.all((samples.mean(0) - mean_env).abs() <= 5 * np.exp(-1.0) * scale / 8 + 1e-5)
    # reach_target's gripper never moves: LeRobot's std is 0 there, so no exploration either
    assert act.head.active.tolist() == [1, 1, 1, 1, 1, 1, 0]
    torch.testing.assert_close(samples[..., 6], mean_env[..., 6].expand_as(samples[..., 6]), atol=1e-5, rtol=0)


def test_policy_gradient_reaches_lerobot_weights_and_the_noise(act):
    obs = env_obs(2)
    chunk, _ = act.sample(obs, torch.Generator().manual_seed(1))
    act.zero_grad()
    (-act.log_prob(obs, chunk.detach()).mean() + act.value(obs).pow(2).mean()).backward()
    groups = act.parameter_groups()
    assert groups["noise"] == [act.head.log_std] and act.head.log_std.grad.abs().sum() > 0
    decoder = act.wrapped.model.action_head.weight
    assert decoder.grad is not None and decoder.grad.abs().sum() > 0
    assert all(p.grad is not None for p in groups["value"])
    act.zero_grad()


def test_round_trip_of_a_fine_tuned_adapter(act_dir, tmp_path):
    from vla_rft.policies.base import load_policy

    policy = load_policy(act_dir)
    with torch.no_grad():  # stand-in for a fine-tuning step on every parameter group
        policy.head.log_std.add_(0.3)
        policy.wrapped.model.action_head.bias.add_(0.05)
    saved = policy.save(tmp_path / "ckpt", step=7)
    assert json.loads((saved / "config.json").read_text())["policy_type"] == "lerobot"
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in saved.iterdir())
    back = load_policy(saved)
    assert type(back) is type(policy) and not back.training
    obs = env_obs(2)
    np.testing.assert_array_equal(back.act(obs), policy.act(obs))
    torch.testing.assert_close(back.entropy(obs), policy.entropy(obs))
    chunk, logp = policy.sample(obs, torch.Generator().manual_seed(3))
    torch.testing.assert_close(back.log_prob(obs, chunk), logp, atol=1e-4, rtol=1e-6)
    assert sorted(back.state_dict()) == sorted(policy.state_dict())


def test_bad_inputs_and_environments_get_clear_errors(act, act_dir, tmp_path):
    from vla_rft.policies.base import load_policy

    obs = env_obs(2)
    with pytest.raises(ContractError, match="missing camera 'front'"):
        act.act({k: v for k, v in obs.items() if k != "observation.images.front"})
    with pytest.raises(ContractError, match="dimension 13, expected 14"):
        act.act(dict(obs, **{"observation.state": obs["observation.state"][:, :13]}))
    with pytest.raises(ContractError, match="wrong action dimension"):
        load_policy(act_dir, action_dim=6)
    with pytest.raises(ContractError, match="missing camera 'front'"):
        load_policy(act_dir, cameras=["wrist"])
    with pytest.raises(ContractError, match="chunk has action dimension 6"):
        act.log_prob(obs, np.zeros((2, CHUNK, 6), np.float32))


def _copy_without(src: Path, dst: Path, *skip: str) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n in skip])
    return dst


def test_broken_lerobot_directories_are_refused(act_dir, tmp_path):
    from vla_rft.policies.base import load_policy

    with pytest.raises(CheckpointError, match="policy_postprocessor.json"):
        load_policy(_copy_without(act_dir, tmp_path / "nopost", "policy_postprocessor.json"))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_policy(f"lerobot:{_copy_without(act_dir, tmp_path / 'noweights', 'model.safetensors')}")
    smol = _copy_without(act_dir, tmp_path / "smol")
    cfg = json.loads((smol / "config.json").read_text())
    (smol / "config.json").write_text(json.dumps(dict(cfg, type="smolvla")))
    with pytest.raises(CheckpointError, match="'smolvla' is not supported.*hub"):
        load_policy(smol)


def test_missing_action_statistics_are_refused(dataset_root, act_dir, tmp_path):
    """LeRobot's unnormalizer silently passes actions through without statistics."""
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors

    from vla_rft.policies.base import load_policy

    meta, _, _ = _features(dataset_root)
    stats = {k: v for k, v in meta.stats.items() if k != "action"}
    policy = ACTPolicy.from_pretrained(str(act_dir))
    out = tmp_path / "nostats"
    policy.save_pretrained(out)
    for pipeline in make_pre_post_processors(policy.config, dataset_stats=stats):
        pipeline.save_pretrained(out)
    with pytest.raises(CheckpointError, match="no statistics for it"):
        load_policy(out)


# ---------------------------------------------------------------------------------- diffusion
def test_tiny_diffusion_saves_loads_and_produces_chunks(dataset_root, tmp_path):
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from vla_rft.policies.base import load_policy

    torch.manual_seed(0)
    out = save_lerobot(DiffusionPolicy(tiny_diffusion_config(dataset_root)), dataset_root, tmp_path / "diffusion")
    policy = load_policy(out)
    assert policy.spec.chunk_size == 4 and policy.spec.extra["lerobot_type"] == "diffusion"
    obs = env_obs(2)
    chunk = policy.act(obs)
    assert chunk.shape == (2, 4, 7) and np.all(np.isfinite(chunk)) and np.all(np.abs(chunk) <= 1)
    np.testing.assert_array_equal(policy.act(obs), chunk)  # seeded sampler: a function of the observation
    sampled, logp = policy.sample(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(policy.log_prob(obs, sampled), logp, atol=1e-3, rtol=1e-5)
    back = load_policy(policy.save(tmp_path / "adapted"))
    np.testing.assert_array_equal(back.act(obs), chunk)
    # a row's chunk and log-prob do not depend on the batch it is in (PPO's first ratio is 1)
    one = {k: v[:1] for k, v in obs.items()}
    np.testing.assert_allclose(policy.act(one)[0], chunk[0], atol=1e-5)
    torch.testing.assert_close(policy.log_prob(one, sampled[:1]), logp[:1], atol=1e-3, rtol=1e-5)


# ---------------------------------------------------------------------------------- end to end
def _eval_through_cli(policy_dir: Path, tmp_path: Path, episodes: int) -> dict:
    from vla_rft.commands.evaluate import EvalConfig, run

    cfg = EvalConfig(policy=str(policy_dir), tasks=[TASK], episodes=episodes, num_envs=episodes, json=False)
    cfg.logging.root = str(tmp_path / "runs")
    assert run(cfg) == 0
    summary = next((tmp_path / "runs").rglob("summary.json"))
    return json.loads(summary.read_text())


def _consistent(res: dict, episodes: int) -> None:
    """The harness's numbers agree with each other: counts, rate, interval, lengths."""
    t = res["per_task"][TASK]
    assert res["episodes"] == t["episodes"] == episodes
    assert t["successes"] == round(t["success_rate"] * episodes)
    assert t["ci95"][0] <= t["success_rate"] <= t["ci95"][1]
    assert t["mean_length"] > 0 and len(t.get("lengths", [0] * episodes)) == episodes


def test_untrained_act_runs_through_vla_rft_eval(act_dir, tmp_path):
    """An untrained ACT cannot pick a cube: every episode runs to the time limit and fails; a
    second run on the same seeds repeats it exactly."""
    import sims

    limit = next(t.max_episode_steps for t in sims.list_tasks() if t.name == TASK)
    res = _eval_through_cli(act_dir, tmp_path / "a", episodes=2)
    again = _eval_through_cli(act_dir, tmp_path / "b", episodes=2)
    _consistent(res, 2)
    assert res["success_rate"] == 0.0 and res["per_task"][TASK]["mean_length"] == limit
    assert again["per_task"] == res["per_task"]


def test_trained_act_end_to_end(dataset_root, tmp_path):
    """LeRobot training (its loss goes down), save_pretrained + processors, adapter, harness
    (~35 s on the 2-core CPU: 40 steps of batch 16 with a resnet18 on 64x64 images)."""
    from vla_rft.evaluation.harness import EvalSettings, evaluate
    from vla_rft.policies.base import load_policy

    policy, losses = train_act(dataset_root, steps=40)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    out = save_lerobot(policy, dataset_root, tmp_path / "trained")
    adapted = load_policy(out, cameras=["front", "wrist"], state_dim=14, action_dim=7)
    settings = EvalSettings(episodes=4, num_envs=4, cameras=list(adapted.spec.cameras))
    with torch.inference_mode():
        res = evaluate(adapted, [TASK], settings)
    _consistent(res, 4)
    with torch.inference_mode():  # seeded episodes, deterministic chunks: the same result again
        assert evaluate(adapted, [TASK], settings)["per_task"] == res["per_task"]
