"""World models: data windows, learning, the imagined env's contract, metrics, checkpoints, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rft.data.chunks import EpisodeTable
from world_models.data import ChunkSequences
from world_models.metrics import open_loop, psnr, ranking, ssim, success_head_scores
from world_models.model import WorldModel, WorldModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "algorithms"))  # sim_fixtures (no conftest here:
# a second tests/*/conftest.py module would shadow the robots tests' `from conftest import TOKEN`)

TINY = ["--model.latent_channels", "8", "--model.codec_channels", "[8,16,16]", "--model.dyn_channels", "32",
        "--model.dyn_blocks", "1", "--model.hidden", "64", "--chunk_size", "4", "--horizon", "3",
        "--batch_size", "8", "--logging.wandb", "disabled"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Three successful pick_cube expert episodes, 32x32 front camera."""
    from vla_rft.commands.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("wm") / "demos"
    collect(CollectConfig(task="pick_cube", episodes=3, out=str(out), seed=11, image_size=32, cameras=["front"]))
    return out


def _cli(*args: str) -> int:
    from vla_rft.cli import main

    return main(list(args))


def _table(lengths: list[int], success_at: dict[int, int]) -> EpisodeTable:
    """A hand-made table: episode e has lengths[e] frames; frame values encode (episode, t)."""
    ep = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)])
    t = np.concatenate([np.arange(n) for n in lengths])
    succ = np.zeros(len(ep), bool)
    for e, k in success_at.items():
        succ[np.flatnonzero(ep == e)[k]] = True
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = np.cumsum(lengths)
    arrays = {"observation.images.front": np.zeros((len(ep), 8, 8, 3), np.uint8),
              "observation.state": np.stack([ep, t], 1).astype(np.float32),
              "action": np.stack([ep * 100 + t] * 2, 1).astype(np.float32),
              "next.success": succ[:, None], "episode_index": ep, "task_index": np.zeros(len(ep), np.int64)}
    return EpisodeTable(arrays, ["t"], np.repeat(starts, lengths), np.repeat(ends, lengths), 10)


def test_sequences_mask_steps_past_the_episode_end_and_label_success_inside_the_chunk():
    seqs = ChunkSequences(_table([7, 5], {0: 6}), chunk_size=3, steps=3, cameras=["front"])
    b = seqs.batch(np.array([1, 7]))
    # episode 0 from t=1: boundaries 1, 4, 7 (-> clamped to the last frame 6), 10
    np.testing.assert_array_equal(b["observation.state"][0, :, 1], [1, 4, 6, 6])
    np.testing.assert_array_equal(b["valid"][0], [True, True, False])
    np.testing.assert_array_equal(b["action"][0, 1, :, 0], [4, 5, 6])  # the chunk that ends the episode
    np.testing.assert_array_equal(b["action"][0, 2, :, 0], [6, 6, 6])  # past the end: the last action repeated
    np.testing.assert_array_equal(b["success"][0], [False, True, False])  # success on frame 6, inside chunk 1
    # episode 1 (frames 7..11) from its start: boundaries 0, 3, 6 (past its 5 frames)
    np.testing.assert_array_equal(b["observation.state"][1, :, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(b["valid"][1], [True, True, False])
    assert not b["success"][1].any()


def test_sequences_need_success_labels():
    from vla_rft.errors import UserInputError

    table = _table([4], {})
    del table.arrays["next.success"]
    with pytest.raises(UserInputError, match="next.success"):
        ChunkSequences(table, 2, 2, ["front"])


def test_psnr_ssim_on_known_images():
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=rng)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=rng)).clamp(0, 1)
    assert (ssim(noisy, x) < 0.95).all()
    half = torch.full((1, 3, 8, 8), 0.5)
    assert float(psnr(half, torch.zeros_like(half))) == pytest.approx(10 * np.log10(1 / 0.25), abs=1e-4)


def test_ranking_metrics_on_known_inputs():
    r = ranking([0.1, 0.2, 0.3], [0.1, 0.3, 0.2])
    assert r["spearman"] == pytest.approx(0.5)
    assert r["pearson"] == pytest.approx(0.5)
    assert r["mae"] == pytest.approx(0.2 / 3)
    perfect = ranking([0.0, 0.5, 0.9], [0.05, 0.4, 0.8])
    assert perfect["spearman"] == pytest.approx(1.0)
    assert np.isnan(ranking([0.2, 0.2], [0.1, 0.3])["pearson"])  # constant: no correlation


def _train(tmp_path: Path, demos: Path, name: str, *extra: str) -> Path:
    code = _cli("world-model", "train", "--data", f"[{demos}]", "--val_episodes", "0", "--logging.root",
                str(tmp_path), "--logging.name", name, *TINY, *extra)
    assert code == 0
    return tmp_path / name


def test_world_model_overfits_a_few_episodes_and_its_success_head_finds_the_successes(tmp_path, demos):
    from vla_rft.commands.pretrain import load_training_table
    from world_models.model import load_world_model

    run = _train(tmp_path, demos, "fit", "--steps", "300", "--optim.lr", "3e-3", "--optim.warmup_steps", "20")
    table = load_training_table([str(demos)], None)
    seqs = ChunkSequences(table, 4, 3, ["front"])
    starts = np.arange(0, len(table), 2)
    untrained = WorldModel(load_world_model(run / "checkpoints" / "last").cfg).eval()
    before = open_loop(untrained, seqs, starts)
    model = load_world_model(run / "checkpoints" / "last")
    after = open_loop(model, seqs, starts)
    assert min(after["psnr"]) > max(before["psnr"]) + 8  # open-loop 3-chunk rollouts, in dB
    assert max(after["state_err"]) < 0.5 * min(before["state_err"])
    scores = success_head_scores(model, ChunkSequences(table, 4, 1, ["front"]), np.arange(len(table)))
    assert scores["success_positives"] >= 3  # every episode succeeds once, seen from several offsets
    assert scores["success_recall"] >= 0.75 and scores["success_precision"] >= 0.75
    losses = [json.loads(x)["train/loss"] for x in (run / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in json.loads(x)]
    assert np.mean(losses[-3:]) < 0.3 * np.mean(losses[:3])


def test_resume_of_world_model_training_matches_an_uninterrupted_run(tmp_path, demos):
    from vla_rft.checkpoint import load_checkpoint

    full = _train(tmp_path, demos, "full", "--steps", "6", "--save_every", "3")
    part = _train(tmp_path, demos, "part", "--steps", "6", "--save_every", "3", "--stop_at", "3")
    mid = load_checkpoint(part / "checkpoints" / "last").tensors
    assert _cli("world-model", "train", "--resume", str(part)) == 0
    a, b = load_checkpoint(full / "checkpoints" / "last").tensors, load_checkpoint(part / "checkpoints" / "last").tensors
    assert any(not torch.equal(mid[k], b[k]) for k in b)  # the resumed steps moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    la = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["train/loss"] for r in lb}
    assert [r["step"] for r in lb] == [3, 6] and all(by_step[r["step"]] == r["train/loss"] for r in la)


def _tiny_model(cameras=("front",), size=32, h=4) -> WorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(cameras=list(cameras), image_size=[size, size], state_dim=14, action_dim=7, chunk_size=h,
                           latent_channels=4, codec_channels=[8, 8, 8], dyn_channels=16, dyn_blocks=1, hidden=32)
    return WorldModel(cfg).eval()


def test_imagined_env_follows_the_sim_source_contract_and_is_deterministic(tmp_path):
    from vla_rft.sources import SourceSpec, make_source

    model = _tiny_model()
    with torch.no_grad():  # a success head that fires on a large gripper command: episodes of either ending
        model.dynamics.head[-1].weight.zero_()
        model.dynamics.head[-1].bias.zero_()
        model.dynamics.head[-1].bias[-1] = -3.0
    model.save(tmp_path / "wm")
    kwargs = {"obs_mode": "rgb", "cameras": ["front"], "image_size": 32, "max_episode_steps": 10}
    spec = SourceSpec("pick_cube", 3, 4, env_kwargs=kwargs, options={"world_model": str(tmp_path / "wm")})
    sim = make_source("sim", SourceSpec("pick_cube", 3, 4, env_kwargs=kwargs))
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-1, 1, (3, 4, 7)).astype(np.float32) for _ in range(4)]

    def play(source):
        obs = [source.reset([5, 6, 7])]
        steps = []
        for c in chunks:
            steps.append(source.step(c))
            obs.append(steps[-1].obs)
        return obs, steps

    wm = make_source("world-model", spec)
    wm_obs, wm_steps = play(wm)
    sim_obs, sim_steps = play(sim)
    wm.close()
    sim.close()
    for i, (o, r) in enumerate(zip(wm_obs, sim_obs)):
        assert sorted(o) == sorted(r)
        for k in o:
            if k == "task":  # the same instruction until both auto-reset (after the third chunk)
                assert o[k] == r[k] if i < 3 else len(o[k]) == len(r[k])
            else:
                assert o[k].shape == r[k].shape and o[k].dtype == r[k].dtype, k
    np.testing.assert_allclose(wm_obs[0]["observation.state"], sim_obs[0]["observation.state"], atol=1e-5)
    for w, s in zip(wm_steps, sim_steps):
        for f in ("rewards", "executed", "terminated", "truncated", "success"):
            assert getattr(w, f).shape == getattr(s, f).shape and getattr(w, f).dtype == getattr(s, f).dtype, f
    # a 10-step limit with h = 4: the third chunk executes 2 steps, then the episode is truncated
    np.testing.assert_array_equal(wm_steps[2].executed.sum(1), [2, 2, 2])
    assert wm_steps[2].truncated.all() and sorted(wm_steps[2].final_obs) == [0, 1, 2]
    again = make_source("world-model", spec)
    again_obs, again_steps = play(again)
    again.close()
    for a, b in zip(again_obs, wm_obs):
        for k in a:
            assert a[k] == b[k] if k == "task" else np.array_equal(a[k], b[k])
    for a, b in zip(again_steps, wm_steps):
        np.testing.assert_array_equal(a.rewards, b.rewards)


def test_imagined_success_terminates_with_the_sparse_reward(tmp_path):
    from world_models.source import ImaginedSource

    model = _tiny_model()
    with torch.no_grad():  # success logit = 10 * (mean of the chunk's gripper commands)
        head = model.dynamics.head[-1]
        head.weight.zero_()
        head.bias.zero_()
    model.dynamics.forward_orig = model.dynamics.forward

    def forward(z, state, chunk):
        z2, s2, _ = model.dynamics.forward_orig(z, state, chunk)
        return z2, s2, 10 * chunk[:, :, 6].mean(1)

    model.dynamics.forward = forward
    src = ImaginedSource(model, "pick_cube", 2, {"cameras": ["front"], "image_size": 32})
    src.reset([1, 2])
    chunk = np.zeros((2, 4, 7), np.float32)
    chunk[0, :, 6] = 1.0
    step = src.step(chunk)
    src.close()
    np.testing.assert_array_equal(step.success, [True, False])
    np.testing.assert_array_equal(step.terminated, [True, False])
    np.testing.assert_array_equal(step.rewards[0], [0, 0, 0, 1.0])
    assert step.rewards[1].sum() == 0 and 0 in step.final_obs and 1 not in step.final_obs


def test_world_model_checkpoints_of_the_wrong_kind_cameras_or_resolution_fail_clearly(tmp_path, capsys):
    from sim_fixtures import save_sim_policy

    wm = _tiny_model(cameras=("wrist",))
    wm.save(tmp_path / "wm_wrist")
    _tiny_model(size=64).save(tmp_path / "wm_64")
    policy = save_sim_policy(tmp_path / "policy")  # front camera, 32 x 32, h = 4
    base = ["finetune", "--algo", "grpo", "--policy", str(policy), "--task", "pick_cube", "--source", "world-model",
            "--iterations", "1", "--eval_episodes", "0", "--retain_tasks", "[]", "--logging.wandb", "disabled",
            "--logging.root", str(tmp_path / "runs")]
    cases = [(str(policy), "holds a 'policy', expected a 'world_model'"),
             (str(tmp_path / "wm_wrist"), "no camera 'front'"),
             (str(tmp_path / "wm_64"), "frames are [64, 64]")]
    for i, (wm_path, message) in enumerate(cases):
        assert _cli(*base, "--world_model", wm_path, "--logging.name", f"r{i}") == 2
        assert message in capsys.readouterr().err
    assert _cli("world-model", "eval", "--world_model", str(tmp_path / "wm_64"), "--task", "pick_cube",
                "--policy", f"[{policy}]", "--episodes", "1") == 2
    assert "image size is [64, 64], the policy's is [32, 32]" in capsys.readouterr().err


def test_grpo_fine_tunes_inside_the_world_model_without_stepping_the_simulator(tmp_path, monkeypatch):
    """finetune --source world-model: the policy's weights move, the imagined rollouts are logged,
    and no real physics step is taken (SimEnv.step is never called; resets only)."""
    from sim_fixtures import save_sim_policy, sim_policy

    import sims.env
    from vla_rft.checkpoint import load_checkpoint
    from world_models.source import ImaginedSource

    model = _tiny_model()
    src = ImaginedSource(model, "pick_cube", 32, {"cameras": ["front"], "image_size": 32})
    obs = src.reset(list(range(32)))
    src.close()
    with torch.no_grad():  # a success head that splits the policy's sampled chunks in two: mixed groups
        head = model.dynamics.head[-1]
        head.weight[-1].normal_(0.0, 3.0, generator=torch.Generator().manual_seed(0))
        chunks = torch.as_tensor(np.asarray(sim_policy().act(obs, deterministic=False), np.float32))
        _, _, logit = model.step(src.z, src.s, chunks)  # the latents of the real reset frames
        head.bias[-1] -= logit.median()
    model.save(tmp_path / "wm")
    policy = save_sim_policy(tmp_path / "policy")

    def no_physics(self, action):
        raise AssertionError("a real simulator step was taken")

    monkeypatch.setattr(sims.env.SimEnv, "step", no_physics)
    code = _cli("finetune", "--config", "grpo_tiny", "--policy", str(policy), "--task", "pick_cube", "--source",
                "world-model", "--world_model", str(tmp_path / "wm"), "--iterations", "2", "--eval_episodes", "0",
                "--time_limit", "4",  # one chunk per episode
                "--grpo.groups", "1", "--grpo.group_size", "4", "--retain_tasks", "[]", "--logging.wandb", "disabled",
                "--logging.root", str(tmp_path / "runs"), "--logging.name", "wm-grpo")
    assert code == 0
    recs = [json.loads(x) for x in (tmp_path / "runs" / "wm-grpo" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["env_steps"] > 0 and "rollout/success_rate" in recs[-1]
    start = load_checkpoint(policy).tensors
    end = load_checkpoint(tmp_path / "runs" / "wm-grpo" / "checkpoints" / "last").tensors
    assert any(not torch.equal(start[k], end[k]) for k in start if k in end)


def test_similarity_reward_is_zero_on_the_recorded_chunks_and_negative_elsewhere(demos):
    from vla_rft.errors import UserInputError
    from world_models.source import DatasetStarts, ImaginedSource

    model = _tiny_model()
    with torch.no_grad():  # latents that move with the chunk (the untrained output layer is zero)
        model.dynamics.out[-1].weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
        for block in model.dynamics.blocks:
            block.conv2.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(1))
    starts = DatasetStarts([str(demos)], ["front"])
    kwargs = {"cameras": ["front"], "image_size": 32}
    src = ImaginedSource(model, "pick_cube", 2, kwargs, reward="similarity", starts=starts)
    obs = src.reset([0, 1])
    table = starts.table
    first = starts.first[:2]
    np.testing.assert_array_equal(obs["observation.state"], table.arrays["observation.state"][first])
    assert obs["task"] == [table.tasks[int(table.arrays["task_index"][i])] for i in first]
    recorded = [starts.chunks(s, 3, 4) for s in (0, 1)]
    for k in range(3):
        chunk = np.stack([recorded[0][k], np.clip(recorded[1][k] + 0.8, -1, 1)])  # env 1 strays
        step = src.step(chunk)
        assert step.rewards[0].sum() == pytest.approx(0.0, abs=1e-6)
        assert step.rewards[1, -1] < 0 and step.rewards[1, :-1].sum() == 0
        assert not step.terminated.any()
    src.close()
    with pytest.raises(UserInputError, match="needs init data"):
        ImaginedSource(model, "pick_cube", 2, kwargs, reward="similarity")


def test_report_draws_world_model_fidelity_and_ranking(tmp_path):
    from vla_rft.report import build_report

    run = tmp_path / "wm-eval"
    run.mkdir()
    summary = {"kind": "world-model eval", "task": "pick_cube", "pearson": 0.9, "spearman": 0.8, "mae": 0.05,
               "fidelity": {"psnr": [25.0, 22.0, None], "ssim": [0.9, 0.8, None], "state_err": [0.01, 0.02, None]},
               "policies": [{"policy": "a", "wm_success": 0.1, "real_success": 0.15, "real_ci95": [0.09, 0.23]},
                            {"policy": "b", "wm_success": 0.4, "real_success": 0.35, "real_ci95": [0.26, 0.45]}]}
    (run / "summary.json").write_text(json.dumps(summary))
    html = Path(build_report([run], tmp_path / "r.html")).read_text()
    assert "wm-eval: world-model fidelity and policy ranking" in html
    assert "Pearson 0.90, Spearman 0.80" in html and html.count("data:image/png") == 2


@pytest.mark.parametrize("preset", sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs"
                                                          / "world_model").glob("*.yaml")))
def test_every_world_model_preset_parses_and_runs_one_chunk(preset):
    """The shipped presets (wm_tiny for the CPU, wm_base for a GPU) are valid configs whose model
    encodes two cameras and imagines one chunk at the policy's 64x64."""
    from dataclasses import replace

    from vla_rft.config import parse_config
    from world_models.train import WorldModelTrainConfig

    cfg = parse_config(WorldModelTrainConfig, ["--config", preset], group="world_model")
    mcfg = replace(cfg.model, cameras=["front", "wrist"], image_size=[64, 64], state_dim=14, action_dim=7)
    model = WorldModel(mcfg).eval()
    images = {c: np.zeros((2, 64, 64, 3), np.uint8) for c in mcfg.cameras}
    with torch.no_grad():
        z = model.encode(images)
        nz, ns, logit = model.step(z, torch.zeros(2, 14), torch.zeros(2, mcfg.chunk_size, 7))
        frames = model.decode(nz)
    assert nz.shape == z.shape and ns.shape == (2, 14) and logit.shape[0] == 2
    assert {k: tuple(v.shape[-2:]) for k, v in frames.items()} == {"front": (64, 64), "wrist": (64, 64)}


def test_eval_ranks_policies_and_measures_the_closed_loop_drift(tmp_path):
    """`world-model eval --policy`: real and imagined success per policy, the ranking metrics, and
    the closed-loop drift of imagined against real episodes from the same seeds (the first chunk
    boundary is the shared reset: no state error), with the side-by-side video."""
    from sim_fixtures import save_sim_policy

    _tiny_model().save(tmp_path / "wm")
    policy = save_sim_policy(tmp_path / "policy")  # front camera, 32 x 32, h = 4
    out = tmp_path / "eval"
    assert _cli("world-model", "eval", "--world_model", str(tmp_path / "wm"), "--task", "pick_cube", "--policy",
                f"[random,{policy}]", "--episodes", "2", "--num_envs", "2", "--videos", "1", "--out", str(out)) == 0
    result = json.loads((out / "eval.json").read_text())
    assert [r["policy"] for r in result["policies"]] == ["random", str(policy)]
    assert all(r["episodes"] == 2 and 0.0 <= r["wm_success"] <= 1.0 for r in result["policies"])
    drift = result["closed_loop"]
    assert drift["episodes"] == 1 and len(drift["psnr"]) == len(drift["state_err"]) >= 2
    assert drift["state_err"][0] < 1e-6  # the shared sim reset (its frames are the codec's reconstruction)
    assert max(drift["state_err"][1:]) > 1e-3 and all(0 < v < 60 for v in drift["psnr"])  # an untrained model drifts
    assert list((out / "videos").glob("pick_cube_seed*_real_vs_imagined.mp4"))
