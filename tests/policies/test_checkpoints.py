"""Policy checkpoints: exact round trips, and clear errors for everything that does not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from policy_fixtures import ACTION_DIM, IMAGE, STATE_DIM, make_obs, make_policy

from vla_rft.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from vla_rft.contract import ContractError
from vla_rft.policies import VLAPolicy, load_policy


def _outputs(policy, obs, latent):
    policy.eval()
    with torch.no_grad():
        return (policy.act(obs), policy.log_prob(obs, latent).numpy(), policy.value(obs).numpy(),
                policy.entropy(obs).numpy())


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("head", ["gaussian", "flow"])
def test_round_trip_identical_outputs_before_and_after_a_train_step(tmp_path, head):
    policy, obs = make_policy(head), make_obs(3)
    with torch.no_grad():
        latent, _ = policy.sample_latent(obs, torch.Generator().manual_seed(1))
    policy.save(tmp_path / "p0")
    loaded = load_policy(tmp_path / "p0")
    assert isinstance(loaded, VLAPolicy) and not loaded.training
    _assert_same(_outputs(policy, obs, latent), _outputs(loaded, obs, latent))

    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    batch = dict(obs, action=np.full((3, policy.spec.chunk_size, ACTION_DIM), 0.3, np.float32),
                 action_is_pad=np.zeros((3, policy.spec.chunk_size), bool))
    loss, _ = policy.bc_loss(batch)
    loss.backward()
    opt.step()
    after = _outputs(policy, obs, latent)
    assert not np.array_equal(after[0], _outputs(loaded, obs, latent)[0])  # the step changed the policy
    policy.save(tmp_path / "p1")
    _assert_same(after, _outputs(load_policy(tmp_path / "p1"), obs, latent))


def test_checkpoint_layout_and_normalizer_travel(tmp_path):
    policy = make_policy()
    policy.save(tmp_path / "p")
    files = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"meta.json", "config.json", "model.safetensors", "normalizer.json"} <= files
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["policy_type"] == "vla" and cfg["model"]["state_dim"] == STATE_DIM
    loaded = load_policy(tmp_path / "p")
    np.testing.assert_array_equal(loaded.normalizer.action_low, policy.normalizer.action_low)


def test_wrong_kind_is_refused(tmp_path):
    save_checkpoint(Checkpoint(kind="critic", config={}, tensors={"w": torch.zeros(2)}), tmp_path / "c")
    with pytest.raises(CheckpointError, match="holds a 'critic', expected a 'policy'"):
        load_policy(tmp_path / "c")


def test_missing_normalizer_is_refused(tmp_path):
    ckpt = make_policy().to_checkpoint()
    ckpt.normalizer = None
    save_checkpoint(ckpt, tmp_path / "p")
    with pytest.raises(CheckpointError, match="no normalizer.json"):
        load_policy(tmp_path / "p")


def test_unknown_policy_type_and_mismatched_weights(tmp_path):
    ckpt = make_policy().to_checkpoint()
    ckpt.config = dict(ckpt.config, policy_type="vlla")
    save_checkpoint(ckpt, tmp_path / "a")
    with pytest.raises(CheckpointError, match="did you mean 'vla'"):
        load_policy(tmp_path / "a")
    ckpt = make_policy().to_checkpoint()
    ckpt.config["model"]["dim"] = 64
    save_checkpoint(ckpt, tmp_path / "b")
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_policy(tmp_path / "b")


def test_environment_mismatch_on_load(tmp_path):
    make_policy().save(tmp_path / "p")
    load_policy(tmp_path / "p", cameras=["front", "wrist"], state_dim=STATE_DIM, action_dim=ACTION_DIM,
                image_size=(IMAGE, IMAGE))
    with pytest.raises(ContractError, match="missing camera 'front'"):
        load_policy(tmp_path / "p", cameras=["wrist"])
    with pytest.raises(ContractError, match="wrong action dimension"):
        load_policy(tmp_path / "p", action_dim=7)
    with pytest.raises(ContractError, match="wrong state dimension"):
        load_policy(tmp_path / "p", state_dim=9)
    with pytest.raises(ContractError, match="images"):
        load_policy(tmp_path / "p", image_size=(64, 64))


def test_bad_observations_and_chunks():
    policy = make_policy()
    obs = make_obs(2)
    with pytest.raises(ContractError, match="missing camera 'front'"):
        policy.act({k: v for k, v in obs.items() if k != "observation.images.front"})
    with pytest.raises(ContractError, match="dimension 4, expected 5"):
        policy.act(dict(obs, **{"observation.state": obs["observation.state"][:, :4]}))
    with pytest.raises(ContractError, match="16x16"):
        policy.act(dict(obs, **{"observation.images.front": obs["observation.images.front"][:, :16, :16]}))
    with pytest.raises(ContractError, match="uint8"):
        policy.act(dict(obs, **{"observation.images.front": obs["observation.images.front"].astype(np.float32)}))
    with pytest.raises(ContractError, match="3 instructions for a batch of 2"):
        policy.act(dict(obs, task=["a", "b", "c"]))
    with pytest.raises(ContractError, match="action dimension 7"):
        policy.log_prob(obs, np.zeros((2, policy.spec.chunk_size, 7), np.float32))
    with pytest.raises(ContractError, match="expected a chunk"):
        policy.log_prob(obs, np.zeros((2, 3, ACTION_DIM), np.float32))
