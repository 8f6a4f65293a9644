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
