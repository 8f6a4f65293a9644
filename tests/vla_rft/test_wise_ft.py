"""WiSE-FT: weight interpolation between a start and a fine-tuned policy, and its sweep."""

import json
import os
import subprocess
import sys

import pytest
import torch

from vla_rft.checkpoint import CheckpointError
from vla_rft.commands.wise_ft import interpolate
from vla_rft.policies.base import load_policy

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def _perturbed(tmp_path):
    """The shipped start with every floating weight moved: a stand-in fine-tuned policy."""
    p = load_policy("pretrained:tiny_kp_4task")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in p.parameters():
            t.add_(0.05 * torch.randn(t.shape, generator=g))
    p.save(tmp_path / "moved")
    return tmp_path / "moved"


def test_interpolation_endpoints_and_midpoint(tmp_path):
    start, moved = load_policy("pretrained:tiny_kp_4task"), load_policy(_perturbed(tmp_path))
    a, b = start.state_dict(), moved.state_dict()
    for alpha, want in ((0.0, a), (1.0, b)):
        got = interpolate(start, moved, alpha).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
    mid = interpolate(start, moved, 0.5).state_dict()
    k = next(k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k]))
    torch.testing.assert_close(mid[k], (a[k] + b[k]) / 2)
    assert all(torch.equal(moved.state_dict()[k], b[k]) for k in b)  # the inputs are not modified


def test_interpolating_two_architectures_is_refused(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "policies"))
    from policy_fixtures import make_policy

    with pytest.raises(CheckpointError, match="not one architecture"):
        interpolate(load_policy("pretrained:tiny_kp_4task"), make_policy(), 0.5)


def test_sweep_alpha_zero_is_the_start_policy_on_the_same_episodes(tmp_path):
    """The sweep's alpha = 0 evaluates exactly what `vla-rft eval` of the start gives on the same seeds."""
    moved = _perturbed(tmp_path)

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "vla_rft.cli", *args, "--json"], capture_output=True, text=True,
                           env=ENV, timeout=600, check=False)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout)

    s = cli("wise-ft", "--start", "pretrained:tiny_kp_4task", "--finetuned", str(moved), "--alphas", "[0,1]",
            "--target", "press_button", "--retain_tasks", "[open_drawer]", "--episodes", "4", "--retain_episodes", "2",
            "--num_envs", "2", "--seed", "300", "--logging.root", str(tmp_path), "--logging.name", "sweep")
    ev = cli("eval", "--policy", "pretrained:tiny_kp_4task", "--tasks", "[press_button]", "--episodes", "4",
             "--num_envs", "2", "--seed", "300", "--logging.root", str(tmp_path))
    assert [r["alpha"] for r in s["rows"]] == [0.0, 1.0]
    assert s["rows"][0]["per_task"]["press_button"] == ev["per_task"]["press_button"]
    assert s["rows"][0]["per_task"]["open_drawer"]["episodes"] == 2
    assert load_policy(tmp_path / "sweep" / "checkpoints" / "alpha_1.00") is not None
    from vla_rft.report import build_report

    page = build_report([tmp_path / "sweep"]).read_text()
    assert "weight interpolation (WiSE-FT)" in page and page.count("data:image/png") == 1
    bad = subprocess.run([sys.executable, "-m", "vla_rft.cli", "wise-ft", "--start", "pretrained:tiny_kp_4task",
                          "--finetuned", str(moved), "--target", "press_button", "--alphas", "[1.5]"],
                         capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert bad.returncode == 2 and "--alphas must be" in bad.stderr
