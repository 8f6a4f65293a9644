"""The evaluation harness, driven by the scripted experts (a policy whose success is known)."""

import numpy as np

from vla_rft.commands.evaluate import ScriptedExpertPolicy
from vla_rft.evaluation.harness import EvalSettings, evaluate


def test_expert_policy_scores_high_with_interval():
    pol = ScriptedExpertPolicy()
    res = evaluate(pol, ["reach_target"], EvalSettings(episodes=6, num_envs=3, cameras=["front"]),
                   reset_hook=pol.reset_hook)
    t = res["per_task"]["reach_target"]
    assert res["episodes"] == 6 and t["success_rate"] == 1.0 and t["ci95"][0] < 1.0 <= t["ci95"][1]
    assert 0 < t["mean_length"] < 100


def test_random_policy_fails_and_results_independent_of_num_envs():
    class Random:
        def act(self, obs, deterministic=True):
            rng = np.random.default_rng(int(obs["observation.state"][:, 0].sum() * 1e6) % 2**32)
            return rng.uniform(-1, 1, (len(obs["task"]), 4, 7)).astype(np.float32)

    a = evaluate(Random(), ["pick_cube"], EvalSettings(episodes=4, num_envs=2, cameras=["front"]))
    b = evaluate(Random(), ["pick_cube"], EvalSettings(episodes=4, num_envs=4, cameras=["front"]))
    assert a["per_task"]["pick_cube"]["success_rate"] == 0.0
    assert a["per_task"] == b["per_task"]  # episode i is seeded with seed + i, whatever the batching


def test_videos_written(tmp_path):
    pol = ScriptedExpertPolicy()
    evaluate(pol, ["reach_target"], EvalSettings(episodes=2, num_envs=2, cameras=["front"], videos=1),
             video_dir=tmp_path, reset_hook=pol.reset_hook)
    vids = sorted(tmp_path.glob("*.mp4"))
    assert len(vids) == 1 and "success" in vids[0].name
    import imageio.v3 as iio

    frames = iio.imread(vids[0], plugin="pyav")
    assert frames.ndim == 4 and frames.shape[1:] == (64, 64, 3) and frames.shape[0] > 2


def test_stochastic_evaluation_is_seeded_per_episode_whatever_the_batching():
    """deterministic=False samples each episode's chunks from a generator seeded by its episode
    seed: the same episodes with 1 or 3 envs side by side, other samples with another seed."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "algorithms"))
    from sim_fixtures import sim_policy

    from vla_rft.evaluation.harness import stochastic_act

    policy = sim_policy().eval()
    with torch.no_grad():
        policy.head.log_std.fill_(0.0)  # wide noise: the samples differ visibly
    obs = {"observation.images.front": np.zeros((3, 32, 32, 3), np.uint8), "task": ["reach the red target"] * 3,
           "observation.state": np.random.default_rng(0).standard_normal((3, 14)).astype(np.float32)}
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    both = stochastic_act(policy, obs, gens(), np.array([0, 1, 2]))
    only_one = stochastic_act(policy, obs, gens(), np.array([1]))
    np.testing.assert_array_equal(both[1], only_one[1])
    assert not np.array_equal(both[0], both[1]) and not only_one[0].any()
    settings = {"episodes": 3, "cameras": ["front"], "image_size": 32, "deterministic": False}
    a = evaluate(policy, ["reach_target"], EvalSettings(num_envs=1, **settings))
    b = evaluate(policy, ["reach_target"], EvalSettings(num_envs=3, **settings))
    assert a["per_task"] == b["per_task"]
