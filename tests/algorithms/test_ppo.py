"""PPO: it learns a trivial task, gradients stay where they belong, runs repeat, terms plug in."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from policy_fixtures import ACTION_DIM, make_obs, make_policy
from synthetic_env import point_source

from vla_rft.algorithms.losses import (
    KLToReference,
    L2ToInit,
    NonFiniteLossError,
    clipped_value_loss,
)
from vla_rft.algorithms.optim import RLOptimConfig
from vla_rft.algorithms.pg import PGBatch, clipped_policy_loss
from vla_rft.algorithms.ppo import PPO, PPOConfig
from vla_rft.algorithms.rollout import ChunkCollector

FAST = PPOConfig(minibatches=2, epochs=2, value_clip=100.0, gamma=0.9)
OPTIM = RLOptimConfig(lr_policy=2e-4, lr_noise=2e-4, lr_value=3e-3)


def _stay_still(policy, steps: int = 200) -> None:
    """Behaviour-clone the head (only) onto the zero action: a pretrained start that stays put."""
    from synthetic_env import PointHomeEnv

    env, opt = PointHomeEnv(), torch.optim.Adam(policy.head.parameters(), lr=3e-3)
    torch.manual_seed(0)
    policy.train()
    for i in range(steps):
        obs = [env.reset(seed=i * 32 + j)[0] for j in range(32)]
        batch = {k: [o[k] for o in obs] if k == "task" else np.stack([o[k] for o in obs]) for k in obs[0]}
        batch["action"] = np.zeros((32, 4, ACTION_DIM), np.float32)
        batch["action_is_pad"] = np.zeros((32, 4), bool)
        loss, _ = policy.bc_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()


def _train(iterations: int, seed: int = 0, cfg: PPOConfig = FAST, terms=None, n: int = 16, head: str = "gaussian",
           optim: RLOptimConfig = OPTIM, pretrained: bool = False, **policy_kw):
    policy = make_policy(head, seed=seed, **({"init_log_std": -0.5} | policy_kw)).eval()
    if pretrained:
        _stay_still(policy)
    ppo = PPO(policy, copy.deepcopy(policy), cfg, optim, iterations, terms)
    col = ChunkCollector(point_source(n), cfg.gamma)
    rng = np.random.default_rng(seed)
    history = []
    for it in range(iterations):
        ro = col.collect(policy, 6, [seed * 10_000 + it * n + i for i in range(n)], sample_seed=it)
        metrics = ppo.update(ro, it, it / iterations, rng)
        history.append({"success": np.mean([e["success"] for e in ro.episodes]), **metrics})
    return policy, history


def test_ppo_learns_point_home():
    """Success on 'bring the point home' rises from ~0 to most episodes in 60 iterations (~10 s)."""
    _, hist = _train(60)
    first = np.mean([h["success"] for h in hist[:5]])
    last = np.mean([h["success"] for h in hist[-5:]])
    assert first <= 0.15 and last >= 0.5, (first, last)
    assert hist[-1]["explained_variance"] > 0.3  # the critic learned too
    assert hist[-1]["kl_to_start"] > hist[0]["kl_to_start"]


def test_ppo_with_the_flow_head_learns_from_a_pretrained_start():
    """The flow head (VLA-RFT's noisy Euler chain) learns point-home from a start behaviour-cloned
    to stay still: success from ~0 to nearly every episode in 60 iterations (~1 min). From an
    untrained head it does not (measured): its x_0 noise, outside the chain's likelihood, then
    drives exploration, so the likelihood ratio carries almost none of the return's signal."""
    _, hist = _train(60, head="flow", pretrained=True, init_log_noise=-1.0,
                     optim=RLOptimConfig(lr_policy=5e-4, lr_noise=5e-4, lr_value=3e-3))
    first = np.mean([h["success"] for h in hist[:5]])
    last = np.mean([h["success"] for h in hist[-5:]])
    assert first <= 0.1 and last >= 0.8, (first, last)
    assert hist[-1]["explained_variance"] > 0.5


def _hand_batch(new_step_logp, old_step_logp, mask, adv):
    m = len(adv)
    return PGBatch({}, torch.zeros(m, 1, 2, 1), torch.tensor(old_step_logp), torch.tensor(mask),
                   torch.tensor(adv), torch.ones(m), torch.zeros(m), torch.zeros(m)), torch.tensor(new_step_logp)


def test_clipped_and_dual_clipped_loss_match_hand_computation():
    """Two chunks of h = 2 steps; the second chunk's episode ended after its first step."""
    new = [[0.3, 0.1], [-0.9, 5.0]]
    old = [[0.0, 0.0], [0.0, 0.0]]
    mask = [[True, True], [True, False]]
    batch, lp = _hand_batch(new, old, mask, [1.0, -2.0])
    e = np.exp
    # chunk level: ratios exp(0.4) and exp(-0.9) (the unexecuted step's 5.0 never counts)
    r0, r1 = e(0.4), e(-0.9)
    want = (-min(r0, 1.2) + max(2.0 * r1, 2.0 * 0.8)) / 2  # max(-A r, -A clip(r)) per chunk
    loss, m = clipped_policy_loss(lp, batch, 0.2, None, "chunk")
    assert float(loss) == pytest.approx(want, rel=1e-5) and m["clip_frac"] == pytest.approx(1.0)
    # step level: each executed step clipped on its own, averaged within its chunk
    s0 = (-min(e(0.3), 1.2) - min(e(0.1), 1.2)) / 2
    s1 = max(2.0 * e(-0.9), 2.0 * 0.8)
    loss, _ = clipped_policy_loss(lp, batch, 0.2, None, "step")
    assert float(loss) == pytest.approx((s0 + s1) / 2, rel=1e-5)
    # chunk_mean (GSPO): exp(mean executed log-ratio)
    g0, g1 = e(0.2), e(-0.9)
    loss, _ = clipped_policy_loss(lp, batch, 0.2, None, "chunk_mean")
    assert float(loss) == pytest.approx((-min(g0, 1.2) + max(2.0 * g1, 2.0 * 0.8)) / 2, rel=1e-5)
    # dual clip: a negative-advantage chunk whose ratio exploded costs at most c * |A|
    batch, lp = _hand_batch([[3.0, 0.0]], [[0.0, 0.0]], [[True, True]], [-1.0])
    loss, _ = clipped_policy_loss(lp, batch, 0.2, 3.0, "chunk")
    assert float(loss) == pytest.approx(3.0) and e(3.0) > 3.0
    loss, _ = clipped_policy_loss(lp, batch, 0.2, None, "chunk")
    assert float(loss) == pytest.approx(e(3.0), rel=1e-5)


def test_unexecuted_steps_change_neither_loss_nor_gradient():
    policy = make_policy()
    batch = _batch(policy)
    batch = batch._replace(mask=torch.tensor([[True] * 4, [True, True, False, False], [True] * 4, [True, False, False, False]]))
    ppo = PPO(policy, copy.deepcopy(policy), PPOConfig(), OPTIM, 1)
    for level in ("chunk", "step", "chunk_mean"):
        ppo.cfg.ratio = level
        loss_a, _ = ppo.loss(batch, 1.0)
        other = batch.latents.clone()
        other[1, :, 2:] += 5.0  # resample the steps that were never executed
        other[3, :, 1:] -= 5.0
        loss_b, _ = ppo.loss(batch._replace(latents=other), 1.0)
        assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-6), level


def test_target_kl_stops_the_epochs_before_the_step_that_passes_it():
    """The first minibatch sees ratio 1 (KL 0) and steps; with a tiny target the next one stops
    the iteration unstepped. Without a target every epoch x minibatch steps."""
    cfg = PPOConfig(minibatches=2, epochs=3, value_clip=100.0, gamma=0.9)
    _, free = _train(1, cfg=cfg)
    _, capped = _train(1, cfg=PPOConfig(**{**cfg.__dict__, "target_kl": 1e-12}))
    assert free[0]["updates"] == 6 and free[0]["early_stopped"] == 0.0
    assert capped[0]["updates"] == 1 and capped[0]["early_stopped"] == 1.0
    assert capped[0]["approx_kl"] == 0.0 < free[0]["approx_kl"]


def test_seeded_runs_repeat_exactly():
    pa, ha = _train(3)
    pb, hb = _train(3)
    assert ha == hb
    for (_, a), (_, b) in zip(pa.state_dict().items(), pb.state_dict().items()):
        assert torch.equal(a, b)


def _batch(policy, n=4):
    obs = make_obs(n)
    with torch.no_grad():
        latent, _ = policy.sample_latent(obs)
        logp = policy.evaluate(obs, latent).step_log_prob
        value = policy.value(obs)
    adv = torch.linspace(-1, 1, n)
    mask = torch.ones_like(logp, dtype=torch.bool)
    return PGBatch(obs, latent, logp, mask, adv, torch.ones(n), value + 1.0, value)


def test_value_loss_sends_no_gradient_to_the_head_and_policy_loss_none_to_the_value_mlp():
    policy = make_policy()
    batch = _batch(policy)
    ev = policy.evaluate(batch.obs, batch.latents)
    clipped_value_loss(ev.value, batch.values, batch.returns, 0.2, 10.0).backward()
    head = list(policy.head.parameters())
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in head)
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in policy.value_net.parameters())
    policy.zero_grad(set_to_none=True)
    ppo = PPO(policy, copy.deepcopy(policy), PPOConfig(vf_coef=0.0, ent_coef=0.0), OPTIM, 1)
    loss, _ = ppo.loss(batch, policy_weight=1.0)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in policy.value_net.parameters())
    assert policy.head.log_std.grad.abs().max() > 0


def test_value_warmup_changes_only_the_value_mlp():
    policy, _ = _train(1, cfg=PPOConfig(minibatches=2, epochs=1, value_warmup_iters=1), n=4)
    start = make_policy(seed=0, init_log_std=-0.5)
    value_ids = {id(p) for p in policy.value_net.parameters()}
    for (name, p), (_, p0) in zip(policy.named_parameters(), start.named_parameters()):
        assert torch.equal(p, p0) != (id(p) in value_ids), name


def test_terms_are_zero_at_the_start_and_their_metrics_are_logged():
    policy = make_policy()
    ref = copy.deepcopy(policy)
    batch = _batch(policy)
    kl, _ = KLToReference(0.1)(policy, ref, batch)
    l2, _ = L2ToInit(1.0)(policy, ref, batch)
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-6) and float(l2.detach()) == 0.0
    with torch.no_grad():
        policy.head.log_std.add_(0.3)
    kl, m = KLToReference(1.0)(policy, ref, batch)
    l2, _ = L2ToInit(2.0)(policy, ref, batch)
    assert m["kl"] > 0 and float(l2.detach()) == pytest.approx(0.3**2 * policy.head.log_std.numel(), rel=1e-4)
    _, hist = _train(1, terms=[L2ToInit(1.0)], n=4)
    assert "loss/l2_init" in hist[0]


class _NaNTerm:
    name = "nan"

    def __call__(self, policy, ref, batch):
        return torch.tensor(float("nan")), {}


def test_nan_loss_refuses_the_update():
    policy = make_policy(seed=0, init_log_std=-0.5).eval()
    before = copy.deepcopy(policy.state_dict())
    ppo = PPO(policy, copy.deepcopy(policy), FAST, OPTIM, 1, [_NaNTerm()])
    ro = ChunkCollector(point_source(2), 0.9).collect(policy, 2, [0, 1], 0)
    with pytest.raises(NonFiniteLossError, match="PPO loss is nan at iteration 0"):
        ppo.update(ro, 0, 0.0, np.random.default_rng(0))
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())
