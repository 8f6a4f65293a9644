"""The policy interface, swept over every registered policy type and head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from policy_fixtures import ACTION_DIM, STATE_DIM, make_obs, make_policy

from vla_rft.policies import available_policies

HEADS = ["gaussian", "flow"]
BUILDERS = {"vla": make_policy}  # every registered policy type needs a small builder here
# Types whose builder needs a LeRobot directory made from a dataset: their own file sweeps the
# same interface (shapes, determinism, log-prob consistency, round trip).
COVERED_ELSEWHERE = {"lerobot": "test_lerobot_adapter.py"}


def test_every_registered_policy_has_a_test_builder():
    assert set(available_policies()) == set(BUILDERS) | set(COVERED_ELSEWHERE)
    assert {v[0] for v in VARIANTS} == set(BUILDERS)


# The VLA's two image tokenizers (average-pooled grid, spatial-softmax keypoints), each head.
VARIANTS = [("vla", h, {}) for h in HEADS] + [("vla", "gaussian", {"image_tokens": "keypoints", "cnn_strides": [2, 1], "film": True})]


@pytest.fixture(params=VARIANTS, ids=lambda p: "-".join([p[0], p[1], p[2].get("image_tokens", "grid")]))
def policy(request):
    policy_type, head, overrides = request.param
    return BUILDERS[policy_type](head, **overrides).eval()


def test_act_shapes_dtype_and_range(policy):
    obs = make_obs(3)
    h = policy.spec.chunk_size
    for deterministic in (True, False):
        chunk = policy.act(obs, deterministic=deterministic)
        assert isinstance(chunk, np.ndarray) and chunk.dtype == np.float32
        assert chunk.shape == (3, h, ACTION_DIM)
        assert np.all(chunk >= -1) and np.all(chunk <= 1) and np.all(np.isfinite(chunk))
    np.testing.assert_array_equal(policy.act(obs), policy.act(obs))  # deterministic is deterministic


def test_accepts_torch_inputs_and_a_single_instruction(policy):
    obs = make_obs(2)
    as_torch = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in obs.items()}
    np.testing.assert_allclose(policy.act(as_torch), policy.act(obs), atol=1e-6)
    single = dict(obs, task="lift the blue block")
    assert policy.act(single).shape[0] == 2


def test_log_prob_of_samples_matches_and_is_finite(policy):
    obs = make_obs(4)
    latent, logp = policy.sample_latent(obs, torch.Generator().manual_seed(0))
    assert latent.shape[0] == 4 and latent.shape[-2:] == (policy.spec.chunk_size, ACTION_DIM)
    assert logp.shape == (4,) and torch.all(torch.isfinite(logp))
    torch.testing.assert_close(policy.log_prob(obs, latent), logp, atol=1e-3, rtol=1e-5)
    chunk, logp2 = policy.sample(obs, torch.Generator().manual_seed(0))  # same seed, same draw
    torch.testing.assert_close(logp2, logp)
    torch.testing.assert_close(chunk, policy.latent_to_chunk(latent))
    if policy.head.latent_steps == 1:  # the chunk is the latent: env-unit chunks work directly
        torch.testing.assert_close(policy.log_prob(obs, chunk), logp, atol=1e-3, rtol=1e-5)
    else:
        with pytest.raises(ValueError, match="Euler chain"):
            policy.log_prob(obs, chunk)


def test_entropy_value_and_evaluate(policy):
    obs = make_obs(3)
    ent, val = policy.entropy(obs), policy.value(obs)
    assert ent.shape == (3,) and torch.all(torch.isfinite(ent))
    assert val.shape == (3,) and torch.all(torch.isfinite(val))
    latent, logp = policy.sample_latent(obs)
    ev = policy.evaluate(obs, latent)
    torch.testing.assert_close(ev.step_log_prob.sum(-1), logp, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(ev.step_entropy.sum(-1), ent)
    torch.testing.assert_close(ev.value, val)


def test_entropy_tracks_the_noise_scale(policy):
    obs = make_obs(2)
    before = policy.entropy(obs)
    with torch.no_grad():
        for p in policy.head.noise_parameters():
            p.add_(0.5)
    assert torch.all(policy.entropy(obs) > before)


def test_seeded_sampling_repeats(policy):
    obs = make_obs(2)
    a = policy.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    b = policy.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a, b)


def test_log_prob_gradients_reach_trunk_and_noise_not_value(policy):
    obs = make_obs(3)
    with torch.no_grad():
        latent, _ = policy.sample_latent(obs)
    policy.log_prob(obs, latent).sum().backward()
    groups = policy.parameter_groups()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["policy"])
    assert all(p.grad is not None for p in groups["noise"])
    assert all(p.grad is None for p in groups["value"])


def test_value_loss_does_not_touch_the_action_head(policy):
    policy.value(make_obs(3)).sum().backward()
    assert all(p.grad is None for p in policy.head.parameters())
    assert all(p.grad is not None for p in policy.parameter_groups()["value"])


def test_bc_loss_is_finite_and_differentiable(policy):
    obs = make_obs(3)
    batch = dict(obs, action=np.random.default_rng(0).uniform(-0.5, 0.5, (3, policy.spec.chunk_size, ACTION_DIM)),
                 action_is_pad=np.array([[False] * policy.spec.chunk_size] * 2 + [[False, False, True, True]]))
    policy.train()
    loss, metrics = policy.bc_loss(batch)
    loss.backward()
    assert np.isfinite(metrics["loss"]) and loss.requires_grad


def test_spec_and_metadata(policy):
    spec = policy.spec
    assert (spec.cameras, spec.state_dim, spec.action_dim) == (["front"], STATE_DIM, ACTION_DIM)
    meta = spec.to_metadata("p")
    assert meta["chunk_size"] == spec.chunk_size and meta["image_shape"] == list(spec.image_size)
