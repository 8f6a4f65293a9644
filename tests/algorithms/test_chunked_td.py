"""Offline chunked TD (vla_rft.algorithms.chunked_td): n-step chunk targets by hand, Cal-QL's
bound, a critic that learns which chunk succeeds, best-of-N's argmax, data checks, and the
finetune route's kill-and-resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from policy_fixtures import ACTION_DIM, IMAGE, STATE_DIM, TASKS, make_obs, make_policy

from vla_rft.algorithms.chunked_td import (
    ChunkedTD,
    ChunkedTDConfig,
    cal_ql_penalty,
    chunk_targets,
    frame_rewards,
    intervention_penalties,
)
from vla_rft.algorithms.forgetting import load_pretrain_windows
from vla_rft.config import ConfigError
from vla_rft.contract import STATE_KEY
from vla_rft.data.chunks import EpisodeTable
from vla_rft.data.lerobot_io import SUCCESS_KEY, EpisodeWriter, contract_features
from vla_rft.policies.critic import best_of_n


def _table(lengths, success_frames):
    n = sum(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    success = np.zeros((n, 1), bool)
    success[list(success_frames)] = True
    return EpisodeTable(arrays={SUCCESS_KEY: success}, tasks=["t"],
                        episode_start=np.repeat(starts, lengths), episode_end=np.repeat(starts + lengths, lengths),
                        fps=10)


def test_chunk_targets_by_hand_termination_and_truncation():
    # episode A: frames 0-4, success on its last frame (terminated); episode B: frames 5-8, no success (truncated)
    table = _table([5, 4], [4])
    r = frame_rewards(table, "success")
    np.testing.assert_array_equal(r, [0, 0, 0, 0, 1, 0, 0, 0, 0])
    t = chunk_targets(table, r, horizon=3, gamma=0.5)
    # frame 0: inside the episode, bootstrap from frame 3 after 3 steps
    assert (t.ret[0], t.discount[0], t.bootstrap[0], t.next_index[0]) == (0.0, 0.125, 1.0, 3)
    # frame 2: the window reaches the terminal success: R = 0.5^2 * 1, no bootstrap
    assert (t.ret[2], t.bootstrap[2]) == (0.25, 0.0)
    # frame 3: two steps left, the third is padding; R = 0.5 * 1
    assert (t.ret[3], t.discount[3], t.bootstrap[3]) == (0.5, 0.25, 0.0)
    np.testing.assert_array_equal(t.pad[3], [False, False, True])
    np.testing.assert_array_equal(t.window[3], [3, 4, 4])
    # frame 6 of the truncated episode: bootstrap from its last frame (8), gamma^3
    assert (t.ret[6], t.discount[6], t.bootstrap[6], t.next_index[6]) == (0.0, 0.125, 1.0, 8)
    # frame 8: one step left, bootstrap from itself with gamma^1
    assert (t.discount[8], t.bootstrap[8], t.next_index[8]) == (0.5, 1.0, 8)
    np.testing.assert_array_equal(t.pad[8], [False, True, True])
    np.testing.assert_allclose(t.mc_return[:5], [0.0625, 0.125, 0.25, 0.5, 1.0])
    np.testing.assert_array_equal(t.mc_return[5:], 0.0)


def test_rewards_relabel_the_first_success_and_need_a_signal():
    table = _table([6], [3, 4])  # a deployed episode that stays successful for two frames
    np.testing.assert_array_equal(frame_rewards(table, "success"), [0, 0, 0, 1, 0, 0])
    bare = EpisodeTable(arrays={}, tasks=["t"], episode_start=np.zeros(3, int), episode_end=np.full(3, 3), fps=10)
    with pytest.raises(ConfigError, match="has no 'next.success' flags or rewards"):
        frame_rewards(bare, "success")
    with pytest.raises(ConfigError, match="has no 'next.reward'"):
        frame_rewards(bare, "stored")


def test_intervention_penalties_mark_the_frame_before_each_takeover():
    table = _table([6, 4], [5])
    flags = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 1], bool)  # episode B opens under the operator
    table.arrays["intervention"] = flags[:, None]
    np.testing.assert_array_equal(intervention_penalties(table, 0.5), [0, -0.5, 0, 0, 0, 0, -0.5, 0, -0.5, 0])
    with pytest.raises(ConfigError, match="no 'intervention' flags"):
        intervention_penalties(_table([3], []), 1.0)


def test_cal_ql_penalty_uses_the_monte_carlo_bound():
    q_ood = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # (K=1, B=2, M=2)
    q_data = torch.tensor([[1.0, 1.0]])
    mc = torch.tensor([1.0, -5.0])
    # state 0: both OOD values are lifted to the bound 1 -> logsumexp(1, 1) = 1 + log 2
    # state 1: bound below -> logsumexp(2, 0)
    expect = ((1 + np.log(2) - 1) + (np.log(np.exp(2) + 1) - 1)) / 2
    assert float(cal_ql_penalty(q_ood, q_data, mc)) == pytest.approx(expect, rel=1e-6)


# ------------------------------------------------------------------ a toy MDP on real datasets
def write_toy(root, episodes=24, length=4, seed=0, action_dim=ACTION_DIM, with_success=True):
    """Each episode plays one constant action: a[0] = +0.6 succeeds at its last frame, -0.6 fails."""
    rng = np.random.default_rng(seed)
    writer = EpisodeWriter(root, contract_features(["front"], (IMAGE, IMAGE), STATE_DIM, action_dim), fps=10)
    for ep in range(episodes):
        good = ep % 2 == 0
        action = np.zeros(action_dim, np.float32)
        action[0] = 0.6 if good else -0.6
        for t in range(length):
            obs = {"observation.images.front": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
                   STATE_KEY: rng.uniform(-1, 1, STATE_DIM).astype(np.float32), "task": TASKS[ep % 2]}
            last = t == length - 1
            writer.add_frame(obs, action, reward=float(good and last), success=with_success and good and last,
                             done=last)
        writer.save_episode()
    writer.finalize()
    return str(root)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy(tmp_path_factory.mktemp("toy") / "toy")


def _algo(data, **cfg):
    policy = make_policy(seed=0, init_log_std=-0.5)
    windows = load_pretrain_windows([data], policy, what="--data")
    c = ChunkedTDConfig(batch_size=64, hidden=64, layers=2, **cfg)
    return ChunkedTD(policy, windows, c, np.random.default_rng(0)), policy


def _chunks(policy, sign):
    a = torch.zeros(1, policy.spec.chunk_size, ACTION_DIM)
    a[..., 0] = 0.6 * sign
    return policy.normalizer.normalize_action(a, clip=True)


@pytest.mark.parametrize("horizon", [0, 1])
def test_the_critic_learns_which_chunk_succeeds(toy, horizon):
    algo, policy = _algo(toy, gamma=0.9, horizon=horizon, cal_ql_alpha=0.1)
    for it in range(250):
        algo.update(algo.collect(it), it, it / 250, np.random.default_rng(it))
    feats = algo.pooled
    with torch.no_grad():
        good = policy.critic(feats, _chunks(policy, +1).expand(len(feats), -1, -1)).mean(0)
        bad = policy.critic(feats, _chunks(policy, -1).expand(len(feats), -1, -1)).mean(0)
    assert float((good - bad).mean()) > 0.3 and float((good > bad).float().mean()) > 0.9


@pytest.mark.parametrize("actor", ["bc_q", "awr"])
def test_trained_actors_move_the_head_toward_the_succeeding_chunk(toy, actor):
    algo, policy = _algo(toy, actor=actor, gamma=0.9, q_coef=1.0, lr_actor=3e-3, awr_beta=0.1)
    obs = make_obs(16)
    with torch.no_grad():
        before = float(policy.head.mode(policy.features(policy.prepare(obs)).action_tokens)[..., 0].mean())
    for it in range(300):
        algo.update(algo.collect(it), it, it / 300, np.random.default_rng(it))
    with torch.no_grad():
        after = float(policy.head.mode(policy.features(policy.prepare(obs)).action_tokens)[..., 0].mean())
    good = float(_chunks(policy, +1)[0, 0, 0])
    assert abs(after - good) < abs(before - good) - 0.1, (before, after, good)


def test_best_of_n_acts_with_the_argmax_of_the_critic():
    policy = make_policy(seed=0, init_log_std=0.0)
    policy.attach_critic(2, 16, 1, 0)
    with torch.no_grad():  # Q = sum of the chunk's first action dim, for every ensemble member
        for q in policy.critic.qs:
            for p in q.parameters():
                p.zero_()
            q[-1].bias.fill_(0.0)
    d = policy.config.dim
    h = policy.spec.chunk_size

    class Linear(torch.nn.Module):
        def forward(self, x):
            return x[:, d:].view(len(x), h, ACTION_DIM)[..., 0].sum(-1, keepdim=True)

    for i in range(2):
        policy.critic.qs[i] = Linear()
    obs = make_obs(3)
    with torch.no_grad():
        f = policy.features(policy.prepare(obs))
        picked = best_of_n(policy.head, policy.critic, f.action_tokens, f.pooled, 8, torch.Generator().manual_seed(1))
        latent, _ = policy.head.sample(f.action_tokens.repeat_interleave(8, 0), torch.Generator().manual_seed(1))
        samples = policy.head.chunk_of(latent).view(3, 8, h, ACTION_DIM)
    best = samples[..., 0].sum(-1).argmax(1)
    torch.testing.assert_close(picked, samples[torch.arange(3), best])
    policy.config.best_of_n = 8  # act(): the QC actor, deterministic with a fixed sample stream
    a1, a2 = policy.act(obs), policy.act(obs)
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, make_policy(seed=0, init_log_std=0.0).act(obs))


def test_a_dataset_written_with_lerobots_own_api_loads(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = contract_features(["front"], (IMAGE, IMAGE), STATE_DIM, ACTION_DIM)
    ds = LeRobotDataset.create(repo_id="local/raw", fps=10, features=features, root=tmp_path / "raw", use_videos=False)
    rng = np.random.default_rng(0)
    for ep in range(3):
        for t in range(5):
            last = t == 4
            ds.add_frame({"observation.images.front": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
                          STATE_KEY: rng.uniform(-1, 1, STATE_DIM).astype(np.float32),
                          "action": rng.uniform(-1, 1, ACTION_DIM).astype(np.float32),
                          "next.reward": np.array([float(last)], np.float32),
                          "next.success": np.array([last]), "next.done": np.array([last]), "task": TASKS[0]})
        ds.save_episode()
    ds.finalize()
    algo, _ = _algo(str(tmp_path / "raw"))
    assert len(algo.rewards) == 15 and algo.rewards.sum() == 3
    m = algo.update(algo.collect(0), 0, 0.0, np.random.default_rng(0))
    assert np.isfinite(m["loss/td"])


def test_bad_data_fails_clearly(tmp_path):
    wrong = write_toy(tmp_path / "wide", episodes=2, action_dim=ACTION_DIM + 1)
    with pytest.raises(ConfigError, match="--data .* does not fit the policy: wrong action dimension"):
        _algo(wrong)
    silent = tmp_path / "silent"
    write_toy(silent, episodes=2, with_success=False)
    algo, _ = _algo(str(silent), reward="stored")  # the rewards are there
    assert algo.rewards.sum() == 1
    with pytest.raises(ConfigError, match="chunked_td.actor must be one of"):
        _algo(str(silent), actor="nope")


def test_finetune_chunked_td_resumes_exactly_and_saves_a_qc_policy(tmp_path, toy):
    from test_finetune import _fake_cfg, _metrics

    from vla_rft.checkpoint import load_checkpoint
    from vla_rft.commands.finetune import FinetuneConfig, _resumed_config, train
    from vla_rft.policies import load_policy

    def cfg(name, **kw):
        c = _fake_cfg(tmp_path, name, "chunked-td", data=[toy], iterations=6, **kw)
        c.chunked_td = ChunkedTDConfig(batch_size=32, hidden=32, num_samples=4)
        return c

    full = train(cfg("full"))
    train(cfg("split", stop_at=3))
    train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "split"))))
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split") and full["env_steps"] == 0
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert any(k.startswith("term.target_critic.") for k in a.state)
    policy = load_policy(tmp_path / "full" / "checkpoints" / "last")
    assert policy.critic is not None and policy.config.best_of_n == 4
    ref = load_checkpoint(tmp_path / "full" / "checkpoints" / "reference")
    assert all(torch.equal(a.tensors[k], ref.tensors[k]) for k in ref.tensors)  # best-of-N leaves the policy as it was


def test_offline_then_online_collects_mixes_and_resumes_exactly(tmp_path, toy):
    """finetune --algo chunked-td --online_steps: after the offline iterations the route collects
    from the source (env steps counted, rollouts logged), the online buffer is in the checkpoint,
    batches mix online and offline transitions, and a run stopped in the online phase resumes to
    the same metrics and weights as an uninterrupted one."""
    from test_finetune import _fake_cfg, _metrics

    from vla_rft.checkpoint import load_checkpoint
    from vla_rft.commands.finetune import FinetuneConfig, _resumed_config, train

    def cfg(name, **kw):
        kw = {"iterations": 3, "online_steps": 2 * 4 * 3 * 4, **kw}
        c = _fake_cfg(tmp_path, name, "chunked-td", data=[toy], **kw)
        c.chunked_td = ChunkedTDConfig(batch_size=16, hidden=32, num_samples=4, online_updates=2)
        return c

    full = train(cfg("full"))
    assert full["iteration"] == 5 and full["env_steps"] > 0  # 3 offline + 2 online iterations
    recs = _metrics(tmp_path / "full")
    online = [r for r in recs if "train/online_buffer" in r]
    assert [r["train/online_buffer"] for r in online] == [12.0, 24.0]  # 4 envs x 3 chunk steps per iteration
    assert all("rollout/episodes" in r for r in online)
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "last").state
    assert state["term.online_buffer.ret"].shape == (24,) and state["term.online_buffer.tokens"].dtype == torch.float16
    train(cfg("split", stop_at=4))
    train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "split"))))
    assert _metrics(tmp_path / "split") == recs
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    # --iterations 0: an offline checkpoint continues online only, with its trained critic
    cont = cfg("cont", iterations=0, online_steps=4 * 3 * 4, policy=str(tmp_path / "full" / "checkpoints" / "last"))
    assert train(cont)["iteration"] == 1
    c = load_checkpoint(tmp_path / "cont" / "checkpoints" / "last")
    critic = [k for k in a.tensors if "critic" in k]
    assert critic and any(not torch.equal(a.tensors[k], c.tensors[k]) for k in critic)  # the critic kept learning
    assert c.state["term.online_buffer.ret"].shape == (12,)


def test_online_phase_needs_the_whole_chunk_critic(toy):
    from vla_rft.sources import SourceSpec, make_source

    policy = make_policy(seed=0)
    windows = load_pretrain_windows([toy], policy, what="--data")
    src = make_source("fake", SourceSpec("point", 2, policy.spec.chunk_size))
    with pytest.raises(ConfigError, match="needs chunked_td.horizon 0"):
        ChunkedTD(policy, windows, ChunkedTDConfig(horizon=1), np.random.default_rng(0), source=src)
