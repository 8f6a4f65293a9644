"""The CLI as a user runs it: subprocesses, stdout JSON only, one-line errors, exit codes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def vla(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "vla_rft.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"vla-rft {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def test_tasks_json():
    d = json.loads(vla("tasks", "--json").stdout)
    tasks = d["tasks"]
    assert len(tasks) >= 8 and len({t["family"] for t in tasks}) >= 6
    for t in tasks:
        assert set(t) >= {"name", "family", "instructions", "cameras", "action_dim"}
        assert t["instructions"] and t["action_dim"] == 7 and "front" in t["cameras"]


def test_collect_json_and_dataset_loads(tmp_path):
    out = tmp_path / "demos"
    p = vla("collect", "--task", "reach_target", "--episodes", "3", "--out", str(out), "--json")
    res = json.loads(p.stdout)  # stdout holds exactly one JSON object
    assert res["task"] == "reach_target" and res["episodes"] == 3 and res["out"] == str(out)
    assert res["success_rate"] == 1.0
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/demos", root=out)
    assert ds.meta.total_episodes == 3
    item = ds[0]
    assert item["observation.images.front"].shape == (3, 64, 64) and item["observation.state"].shape == (14,)
    assert item["action"].shape == (7,)
    import sims

    spec = next(s for s in sims.list_tasks() if s.name == "reach_target")
    assert item["task"] in spec.instructions  # a filled training instruction
    assert bool(ds[len(ds) - 1]["next.success"])


def test_collect_is_deterministic(tmp_path):
    from vla_rft.data.chunks import load_episode_table

    for name in ("a", "b"):
        vla("collect", "--task", "push_cube", "--episodes", "2", "--seed", "5", "--out", str(tmp_path / name),
            "--cameras=[front]", "--json")
    ta, tb = load_episode_table(tmp_path / "a"), load_episode_table(tmp_path / "b")
    for k in ("observation.images.front", "observation.state", "action"):
        np.testing.assert_array_equal(ta.arrays[k], tb.arrays[k])


def test_bench_sim_json_keys():
    res = json.loads(vla("bench", "sim", "--json", "--seconds", "0.3", "--robosuite", "false").stdout)
    for k in ("mj_step_per_s", "env_steps_per_s_state", "env_steps_per_s_camera", "ratio_state_vs_limit"):
        assert res[k] > 0
    assert res["robosuite_steps_per_s_camera"] is None and res["ratio_camera_vs_robosuite"] is None


@pytest.mark.parametrize("args,needle", [
    (["colect"], "did you mean 'collect'"),
    (["collect", "--task", "pick_cub", "--out", "x"], "Did you mean 'pick_cube'"),
    (["collect", "--episods", "3"], "did you mean 'episodes'"),
    (["collect", "--task", "pick_cube"], "--out is required"),
    (["collect", "--task", "pick_cube", "--out", "x", "--episodes", "zero"], "invalid"),
    (["collect", "--task", "pick_cube", "--out", "x", "--perturbation", "wobbly"], "wobbly"),
    (["bench"], "needs a subcommand"),
    (["tasks", "--family", "juggling"], "unknown family"),
])
def test_bad_input_is_one_clear_line(args, needle):
    p = vla(*args, check=False)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vla-rft: error:") and needle in lines[0], p.stderr


def test_every_command_documents_every_field():
    """draccus shows a field's docstring in --help; a docstring it cannot parse shows nothing."""
    import dataclasses
    import io
    from contextlib import redirect_stdout

    import draccus

    from vla_rft.cli import _commands

    for name, cmd in _commands().items():
        cls = cmd.config()
        buf = io.StringIO()
        with redirect_stdout(buf), pytest.raises(SystemExit):
            draccus.parse(config_class=cls, args=["--help"])
        text = buf.getvalue()
        hints = __import__("typing").get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            lines = text.splitlines()
            i = next((j for j, ln in enumerate(lines) if ln.strip().startswith(f"--{f.name} ")), None)
            assert i is not None, f"vla-rft {name}: --{f.name} is not in --help"
            # help text on the option's line, or (a long option name) indented on the next one
            same = len(lines[i].split(None, 2)) == 3
            below = i + 1 < len(lines) and lines[i + 1].startswith(" " * 8) and not lines[i + 1].strip().startswith("--")
            assert same or below, f"vla-rft {name}: --{f.name} has no help"


def test_eval_scripted_expert_json(tmp_path):
    p = vla("eval", "--policy", "scripted:expert", "--tasks", "[reach_target]", "--episodes", "4", "--num_envs", "2",
            "--json", "--logging.root", str(tmp_path))
    res = json.loads(p.stdout)
    assert res["episodes"] == 4 and res["success_rate"] == 1.0 and len(res["ci95"]) == 2
    assert res["per_task"]["reach_target"]["episodes"] == 4
    assert json.loads((tmp_path / os.path.basename(res["run_dir"]) / "summary.json").read_text())["episodes"] == 4


@pytest.mark.parametrize("args,needle", [
    (["eval", "--tasks", "[pick_cube]"], "--policy is required"),
    (["eval", "--policy", "scripted:expert"], "--tasks is required"),
    (["eval", "--policy", "scripted:expert", "--tasks", "[pik_cube]"], "Did you mean 'pick_cube'"),
    (["eval", "--policy", "/nonexistent/ckpt", "--tasks", "[pick_cube]"], "not a directory"),
])
def test_eval_bad_input(args, needle, tmp_path):
    p = vla(*args, "--logging.root", str(tmp_path), check=False)
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_collect_dart_noise_perturbs_execution_not_labels(tmp_path):
    from vla_rft.data.chunks import load_episode_table

    for name, noise in (("clean", "0"), ("dart", "0.3")):
        res = json.loads(vla("collect", "--task", "reach_target", "--episodes", "2", "--seed", "3", "--noise", noise,
                             "--cameras=[front]", "--out", str(tmp_path / name), "--json").stdout)
        assert res["success_rate"] == 1.0 and res["noise"] == float(noise)
    clean, dart = load_episode_table(tmp_path / "clean"), load_episode_table(tmp_path / "dart")
    n = min(len(clean), len(dart))
    # the executed noise moves the arm elsewhere ...
    assert not np.allclose(clean.arrays["observation.state"][1:n], dart.arrays["observation.state"][1:n])
    # ... while the recorded labels stay the expert's clean actions: smooth from step to step
    # (recorded N(0, 0.3) noise would make consecutive actions differ by ~0.34 on average)
    a, ep = dart.arrays["action"], dart.arrays["episode_index"]
    same = ep[1:] == ep[:-1]
    assert np.abs(np.diff(a, axis=0))[same][:, :3].mean() < 0.12
    p = vla("collect", "--task", "reach_target", "--out", str(tmp_path / "x"), "--noise", "-1", check=False)
    assert p.returncode == 2 and "--noise must be >= 0" in p.stderr


def test_quickstart_from_scratch_runs_every_stage(tmp_path):
    """The README's main job with --from_scratch, shrunk (2 demos, 3 BC steps, a few seconds of
    PPO, 2 episodes): every stage runs and the summary and report say what was measured."""
    p = vla("quickstart", "--from_scratch", "--demos", "2", "--steps", "3", "--retain_tasks", "[reach_target]",
            "--target", "press_button", "--eval_episodes", "2", "--retain_episodes", "2", "--videos", "1",
            "--num_envs", "2", "--minutes", "0.05", "--curve_episodes", "0", "--vector", "sync", "--root", str(tmp_path),
            "--name", "qs", "--json")
    root = tmp_path / "qs"
    s = json.loads(p.stdout)  # exactly one JSON object on stdout
    assert s == json.loads((root / "summary.json").read_text())
    assert s["run_dir"] == str(root) and s["start_policy"] == str(root / "pretrain" / "checkpoints" / "last")
    assert json.loads((root / "pretrain" / "summary.json").read_text())["step"] == 3
    assert (root / "data" / "reach_target" / "meta" / "info.json").is_file()
    assert s["iterations"] >= 1 and s["env_steps"] > 0
    for stage in ("before", "after"):
        per_task = s[stage]["per_task"]
        assert set(per_task) == {"press_button", "reach_target"} and all(r["episodes"] == 2 for r in per_task.values())
    assert set(s["seconds"]) >= {"pretrain_s", "eval_before_s", "finetune_s", "eval_after_s"}
    page = (root / "report.html").read_text()
    assert "press_button (target)" in page and page.count("<video") == 4
    p = vla("quickstart", "--root", str(tmp_path), "--name", "qs", check=False)  # other settings: refused
    assert p.returncode == 2 and "other settings" in p.stderr


@pytest.mark.parametrize("bug", [ValueError("internal"), TypeError("internal")])
def test_an_internal_bug_is_a_traceback_not_a_user_error(bug, monkeypatch, capsys):
    """A plain ValueError/TypeError from deep in the code is a bug: it propagates (the script
    prints its traceback, exit status 1) instead of posing as a one-line input error."""
    from vla_rft import cli
    from vla_rft.commands import tasks
    from vla_rft.errors import USER_ERRORS

    assert ValueError not in USER_ERRORS and TypeError not in USER_ERRORS

    def run(cfg):
        raise bug

    monkeypatch.setattr(tasks, "run", run)
    with pytest.raises(type(bug), match="internal"):
        cli.main(["tasks"])
    assert "vla-rft: error" not in capsys.readouterr().err


def test_a_user_input_error_is_still_one_line_with_status_2(monkeypatch, capsys):
    from vla_rft import cli
    from vla_rft.commands import tasks
    from vla_rft.errors import UserInputError

    def run(cfg):
        raise UserInputError("--family 'x' is not a family")

    monkeypatch.setattr(tasks, "run", run)
    assert cli.main(["tasks"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == ["vla-rft: error: --family 'x' is not a family"]
