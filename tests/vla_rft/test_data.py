import numpy as np
import pytest

from vla_rft.contract import STATE_KEY
from vla_rft.data.chunks import ChunkWindows, load_episode_table
from vla_rft.data.lerobot_io import EpisodeWriter, contract_features, open_dataset

LENGTHS = [7, 12, 5]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "demo"
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(root, contract_features(["front"], (16, 16), 5, 7), fps=10)
    frames = []
    for ep, n in enumerate(LENGTHS):
        for t in range(n):
            obs = {"observation.images.front": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                   STATE_KEY: rng.standard_normal(5).astype(np.float32), "task": f"do thing {ep % 2}"}
            act = rng.uniform(-1, 1, 7).astype(np.float32)
            last = t == n - 1
            writer.add_frame(obs, act, reward=float(last), success=last, done=last)
            frames.append((obs, act))
        writer.save_episode()
    writer.finalize()
    return root, frames


def test_round_trip_with_lerobot(dataset):
    root, frames = dataset
    ds = open_dataset(root)
    assert ds.meta.total_episodes == len(LENGTHS) and len(ds) == sum(LENGTHS)
    item = ds[8]
    obs, act = frames[8]
    np.testing.assert_array_equal((item["observation.images.front"].numpy() * 255).round().astype(np.uint8),
                                  obs["observation.images.front"].transpose(2, 0, 1))
    np.testing.assert_array_equal(item["action"].numpy(), act)
    assert item["task"] == "do thing 1"


def test_chunk_windows_match_lerobot_delta_timestamps(dataset):
    root, _ = dataset
    h = 6
    cw = ChunkWindows(load_episode_table(root), h)
    ref = open_dataset(root, delta_timestamps={"action": [k / 10 for k in range(h)]})
    for i in range(len(cw)):
        np.testing.assert_array_equal(cw[i]["action"], ref[i]["action"].numpy())
        np.testing.assert_array_equal(cw[i]["action_is_pad"], ref[i]["action_is_pad"].numpy())


def test_chunk_window_padding_and_bootstrap(dataset):
    root, frames = dataset
    cw = ChunkWindows(load_episode_table(root), 4)
    w = cw[5]  # episode 0 has 7 frames: t=5 -> frames 5, 6, then 2 padded
    assert w["action_is_pad"].tolist() == [False, False, True, True]
    np.testing.assert_array_equal(w["action"][3], frames[6][1])  # padding repeats the last action
    assert w["next.reward"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert bool(w["next.done"]) and w["next_index"] == 6 and bool(w["next.success"])
    w = cw[7]  # first frame of episode 1: a full window, no terminal inside
    assert not w["action_is_pad"].any() and not bool(w["next.done"]) and w["next_index"] == 11
    batch = cw.sample(32, np.random.default_rng(0))
    assert batch["action"].shape == (32, 4, 7) and batch["observation.images.front"].shape == (32, 16, 16, 3)
    assert batch["observation.images.front"].dtype == np.uint8 and len(batch["task"]) == 32


def test_writer_refuses_existing_root_and_bad_horizon(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(FileExistsError, match="already exists"):
        EpisodeWriter(root, contract_features(["front"], (16, 16), 5, 7), fps=10)
    with pytest.raises(ValueError, match="horizon"):
        ChunkWindows(load_episode_table(root), 0)
    with pytest.raises(FileNotFoundError, match="not a LeRobotDataset"):
        load_episode_table(tmp_path)


def test_collect_policy_rollouts_writes_failures_with_executed_actions_repeatably(tmp_path):
    """collect --policy: every episode written (the shipped policy fails press_button mostly),
    labelled with the executed (clipped) action; a seed gives the same data twice."""
    from vla_rft.commands.collect import CollectConfig, collect

    def run(name, **kw):
        out = tmp_path / name
        res = collect(CollectConfig(task="press_button", episodes=2, out=str(out), seed=5,
                                    policy="pretrained:tiny_kp_4task", **kw))
        return res, load_episode_table(out)

    res, table = run("a")
    assert res["episodes_written"] == 2 and res["actor"] == "pretrained:tiny_kp_4task"
    assert len(np.unique(table.arrays["episode_index"])) == 2
    actions = table.arrays["action"]
    assert np.abs(actions).max() <= 1.0 and actions.std() > 0
    _, again = run("b")
    np.testing.assert_array_equal(again.arrays["action"], actions)  # seeded sampling
    _, det = run("c", deterministic=True)
    assert not np.array_equal(det.arrays["action"][:8], actions[:8])  # the mode, not a sample
