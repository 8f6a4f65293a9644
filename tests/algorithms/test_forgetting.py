"""Forgetting-mitigation modules (vla_rft.algorithms.forgetting): each one's gradient or effect on
a small policy, their combination, exact kill-and-resume with stateful modules, and bad configs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from policy_fixtures import ACTION_DIM, make_obs, make_policy, write_dataset

from vla_rft.algorithms.forgetting import (
    EMA,
    EWC,
    ForgettingConfig,
    KLTerm,
    LoRA,
    ReplayBC,
    build_modules,
    evaluation_weights,
    export_weights,
    load_pretrain_windows,
)
from vla_rft.algorithms.losses import L2ToInit, apply_terms, register_term
from vla_rft.checkpoint import load_checkpoint
from vla_rft.config import ConfigError
from vla_rft.contract import TASK_KEY
from vla_rft.policies import load_policy


class _Batch:
    def __init__(self, obs):
        self.obs = obs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(write_dataset(tmp_path_factory.mktemp("pre") / "pre", episodes=8, length=8, seed=1))


def _pair(shift: float = 0.3):
    """(policy, reference): the policy's weights moved away from the reference's."""
    ref = make_policy(seed=0, init_log_std=-0.5)
    policy = copy.deepcopy(ref)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(shift * torch.randn_like(p) * (p.abs().mean() + 0.05))
    for p in ref.parameters():
        p.requires_grad_(False)
    return policy, ref


def _kl(policy, ref, obs, direction):
    from vla_rft.algorithms.losses import forward_kl

    with torch.no_grad():
        if direction == "forward":
            return float(forward_kl(policy, ref, obs, torch.Generator().manual_seed(5)).mean())
        latent, _ = policy.sample_latent(obs, torch.Generator().manual_seed(5))
        return float((policy.log_prob(obs, latent) - ref.log_prob(obs, latent)).mean())


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_kl_steps_move_the_policy_toward_the_reference(direction):
    policy, ref = _pair()
    obs = make_obs(16, seed=3)
    before = _kl(policy, ref, obs, direction)
    term = KLTerm(1.0, direction)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(30):
        loss, _ = term(policy, ref, _Batch(obs))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _kl(policy, ref, obs, direction)
    assert before > 0.5 and after < 0.5 * before, (before, after)


def test_kl_on_pretraining_states_reads_the_replay_data_not_the_batch(data):
    policy, ref = _pair()
    windows = load_pretrain_windows([data], policy)
    term = KLTerm(1.0, "forward", windows, ratio=0.5, seed=0)
    batch = _Batch({"bad": None, TASK_KEY: ["x"] * 8})  # a batch the policy could not read
    _, m = term(policy, ref, batch)
    assert m["kl"] > 0 and term.calls == 1


def test_l2_gradient_points_back_to_init():
    policy, ref = _pair()
    loss, _ = L2ToInit(2.0)(policy, ref, _Batch(make_obs(2)))
    loss.backward()
    for (n, p), (_, r) in zip(policy.named_parameters(), ref.named_parameters()):
        if n.startswith("value_net."):  # the critic moves freely
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, 2.0 * (p.detach() - r))


def test_ewc_gradient_is_the_fisher_weighted_distance(data):
    policy, ref = _pair()
    windows = load_pretrain_windows([data], policy)
    ewc = EWC(3.0, windows, samples=16, ref_policy=ref, seed=0)
    flat = torch.cat([f.reshape(-1) for f in ewc.fisher.values()])
    assert flat.mean().item() == pytest.approx(1.0, rel=1e-5) and flat.min() >= 0 and flat.std() > 0.1
    loss, _ = ewc(policy, ref, _Batch(make_obs(2)))
    loss.backward()
    for (n, p), (_, r) in zip(policy.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, 3.0 * ewc.fisher[n] * (p.detach() - r))
    # a parameter the imitation loss never touches (the value MLP) has zero Fisher: free to move
    assert all(float(ewc.fisher[n].abs().max()) == 0 for n, _ in policy.value_net.named_parameters(prefix="value_net"))


def test_replay_mixes_batches_in_the_stated_ratio_and_teaches_the_pretraining_data(data):
    policy, ref = _pair(shift=0.0)
    windows = load_pretrain_windows([data], policy)
    term = ReplayBC(1.0, windows, ratio=0.25, seed=0)
    for rows in (8, 16, 40):
        assert len(term.replay_batch(rows)[TASK_KEY]) == round(0.25 * rows)
    probe = windows.batch(np.arange(len(windows)))
    with torch.no_grad():
        before = float(policy.bc_loss(probe, torch.Generator().manual_seed(0))[0])
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(40):
        loss, m = term(policy, ref, _Batch(make_obs(16)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["windows"] == 4.0
    with torch.no_grad():
        after = float(policy.bc_loss(probe, torch.Generator().manual_seed(0))[0])
    assert after < 0.7 * before, (before, after)


def test_lora_trains_adapters_only_and_exports_the_merged_policy(tmp_path):
    policy, ref = _pair(shift=0.0)
    lora = LoRA(policy, ref, rank=2, alpha=4.0, targets=["linear1", "linear2", "mean.1"])
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and all(
        "lora_" in n or n.startswith("value_net") or n == "head.log_std" for n in trainable)
    base = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    obs = make_obs(8)
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    target = torch.zeros(8, 4, ACTION_DIM)
    for _ in range(5):
        loss = -policy.log_prob(obs, target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, base[n]) for n, p in policy.named_parameters() if n in base)  # base untouched
    exported = export_weights([lora], policy)
    assert set(exported) == set(ref.state_dict())  # plain policy names
    policy.save(tmp_path / "merged", exported)
    merged = load_policy(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged.log_prob(obs, target), policy.log_prob(obs, target), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(merged.log_prob(obs, target), ref.log_prob(obs, target))


def test_ema_averages_evaluates_and_exports_the_average():
    policy, _ = _pair(shift=0.0)
    ema = EMA(policy, decay=0.5)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    ema.after_update(policy)
    raw = {k: v.clone() for k, v in policy.state_dict().items()}
    name = "head.log_std"
    torch.testing.assert_close(ema.average[name], start[name] + 0.5)
    with evaluation_weights([ema], policy):
        torch.testing.assert_close(policy.state_dict()[name], start[name] + 0.5)
    assert all(torch.equal(v, raw[k]) for k, v in policy.state_dict().items())  # raw weights back
    torch.testing.assert_close(export_weights([ema], policy)[name], start[name] + 0.5)


def test_modules_combine_and_log_each_term(data):
    policy, ref = _pair()
    cfg = ForgettingConfig(kl_ref_coef=0.1, l2_init_coef=0.01, ewc_coef=0.01, replay_coef=1.0, ema_decay=0.9,
                           lora_rank=2, freeze=["image_encoder"], pretrain_data=[data], ewc_samples=8)
    assert cfg.active() == ["freeze", "lora", "kl_ref", "l2_init", "ewc", "replay", "ema"]
    modules = build_modules(cfg, policy, ref)
    total, metrics = apply_terms(modules, policy, ref, _Batch(make_obs(8)))
    parts = sum(metrics[f"loss/{n}"] for n in ("kl_ref", "l2_init", "ewc", "replay"))
    assert float(total.detach()) == pytest.approx(parts, rel=1e-5)
    assert not any(p.requires_grad for n, p in policy.named_parameters() if n.startswith("image_encoder"))


def test_bad_configs_fail_clearly(data, tmp_path):
    policy, ref = _pair()
    with pytest.raises(ConfigError, match="unknown loss term 'nope'"):
        build_modules(ForgettingConfig(terms={"nope": 1.0}), policy, ref)
    with pytest.raises(ConfigError, match="regularizers.l2_init_coef must be a finite number >= 0"):
        build_modules(ForgettingConfig(l2_init_coef=-1.0), policy, ref)
    with pytest.raises(ConfigError, match="regularizers.replay_coef needs regularizers.pretrain_data"):
        build_modules(ForgettingConfig(replay_coef=1.0), policy, ref)
    with pytest.raises(ConfigError, match="regularizers.freeze: no parameter .* 'trunkk'"):
        build_modules(ForgettingConfig(freeze=["trunkk"]), policy, ref)
    from policy_fixtures import STATE_DIM, small_config

    from vla_rft.policies import Normalizer, VLAPolicy

    rng = np.random.default_rng(0)
    norm = Normalizer.from_data(rng.standard_normal((64, STATE_DIM)), rng.uniform(-0.5, 0.5, (64, ACTION_DIM + 1)))
    other = VLAPolicy(small_config(action_dim=ACTION_DIM + 1), norm)
    with pytest.raises(ConfigError, match="pretrain_data .* does not fit the policy: wrong action dimension"):
        build_modules(ForgettingConfig(replay_coef=1.0, pretrain_data=[data]), other, copy.deepcopy(other))


def test_registered_terms_are_chosen_by_name_with_a_coefficient():
    @register_term("test_const")
    class Const:
        name = "test_const"

        def __init__(self, coef):
            self.coef = coef

        def __call__(self, policy, ref, batch):
            return torch.tensor(self.coef), {}

    policy, ref = _pair()
    modules = build_modules(ForgettingConfig(terms={"test_const": 0.25}), policy, ref)
    total, _ = apply_terms(modules, policy, ref, _Batch(make_obs(2)))
    assert float(total) == 0.25


# ------------------------------------------------------------------ through the trainer
def _fake(tmp_path, name, data, sft_data=None, **kw):
    """finetune on the fake point source (PPO), or behaviour cloning on ``sft_data`` (sft), with
    every stateful module on."""
    from test_finetune import _fake_cfg

    extra = {"data": [sft_data], "iterations": 6, "sft_batch_size": 8} if sft_data else {}
    cfg = _fake_cfg(tmp_path, name, "sft" if sft_data else "ppo", **{**kw, **extra})
    cfg.regularizers = ForgettingConfig(ewc_coef=0.5, replay_coef=0.5, replay_ratio=0.5, ema_decay=0.7, lora_rank=2,
                                        kl_ref_coef=0.05, kl_states="pretrain", pretrain_data=[data], ewc_samples=8)
    return cfg


def test_stateful_modules_survive_kill_and_resume_exactly(tmp_path, data):
    from test_finetune import _metrics

    from vla_rft.commands.finetune import FinetuneConfig, _resumed_config, train

    full = train(_fake(tmp_path, "full", data))
    train(_fake(tmp_path, "split", data, stop_at=2))
    resumed = train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "split"))))
    assert resumed["finished"] and resumed["env_steps"] == full["env_steps"]
    rows = _metrics(tmp_path / "full")
    assert rows == _metrics(tmp_path / "split")
    assert {"train/loss/ewc", "train/loss/replay", "train/loss/kl_ref"} <= set(rows[-1])
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    ref = load_checkpoint(tmp_path / "full" / "checkpoints" / "reference")
    assert set(a.tensors) == set(ref.tensors)  # LoRA merged: a plain policy
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert any(not torch.equal(a.tensors[k], ref.tensors[k]) for k in a.tensors)  # the weights moved
    assert any(k.startswith("term.ewc.fisher.") for k in a.state) and "term.replay.calls" in a.state
    # the checkpoint is the EMA of the raw weights, which stay in the training state
    raw = {k.removeprefix("term.raw."): v for k, v in a.state.items() if k.startswith("term.raw.")}
    assert any(".lora_A." in k for k in raw)
    load_policy(tmp_path / "full" / "checkpoints" / "last")


def test_sft_route_takes_the_modules_and_resumes_exactly(tmp_path, data):
    """finetune --algo sft: behaviour cloning of the start on demonstrations, with replay and EMA,
    killed and resumed: the same metrics and weights; the imitation loss falls."""
    from test_finetune import _metrics

    from vla_rft.commands.finetune import FinetuneConfig, _resumed_config, train

    demos = str(write_dataset(tmp_path / "demos", episodes=6, length=8, seed=7))
    full = train(_fake(tmp_path, "sft-full", data, demos))
    train(_fake(tmp_path, "sft-split", data, demos, stop_at=2))
    train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "sft-split"))))
    rows = _metrics(tmp_path / "sft-full")
    assert rows == _metrics(tmp_path / "sft-split") and full["env_steps"] == 0
    assert "train/loss/replay" in rows[-1] and rows[-1]["train/loss"] < rows[0]["train/loss"]


def test_finetune_evaluates_retention_on_the_tasks_the_checkpoint_was_pretrained_on():
    from vla_rft.commands.finetune import pretraining_tasks

    assert pretraining_tasks("pretrained:tiny_kp_4task") == ["close_drawer", "lift_cube", "open_drawer", "push_cube"]
    from vla_rft.commands.pretrain import task_names

    assert task_names(["open the red drawer", "press the red button", "not a task"]) == ["open_drawer", "press_button"]
