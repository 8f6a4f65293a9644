"""Every command's ``--json`` prints exactly one JSON object on stdout (wandb on, as users run
it), and the quickstart, killed mid fine-tuning, resumes instead of starting over."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
PRE = "pretrained:tiny_kp_4task"


def _json_only(args: list[str], cwd: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "vla_rft.cli", *args, "--json"], capture_output=True, text=True,
                       env=ENV, timeout=600, check=False, cwd=cwd)
    assert p.returncode == 0, f"vla-rft {' '.join(args)} failed:\n{p.stderr[-3000:]}"
    assert p.stdout.count("\n") == 1 and p.stdout.endswith("}\n"), f"stdout is not one JSON line:\n{p.stdout[:2000]}"
    return json.loads(p.stdout)


def test_training_and_bench_commands_print_one_json_object(tmp_path):
    """pretrain, finetune and eval with wandb in its default offline mode; bench policy; tasks."""
    data = tmp_path / "demo"
    assert _json_only(["collect", "--task", "reach_target", "--episodes", "2", "--out", str(data)], tmp_path)["episodes"] == 2
    pre = _json_only(["pretrain", "--config", "tiny", "--datasets", f"[{data}]", "--steps", "2", "--batch_size", "4",
                      "--logging.root", str(tmp_path), "--logging.name", "pre"], tmp_path)
    assert pre["step"] == 2 and (tmp_path / "pre" / "wandb").is_dir()
    ft = _json_only(["finetune", "--policy", PRE, "--task", "press_button", "--iterations", "1", "--num_envs", "2",
                     "--rollout_len", "2", "--eval_episodes", "0", "--logging.root", str(tmp_path),
                     "--logging.name", "ft"], tmp_path)
    assert ft["iteration"] == 1 and ft["env_steps"] > 0 and (tmp_path / "ft" / "wandb").is_dir()
    ev = _json_only(["eval", "--policy", PRE, "--tasks", "[press_button]", "--episodes", "2", "--num_envs", "2",
                     "--logging.root", str(tmp_path), "--logging.wandb", "offline"], tmp_path)
    assert ev["episodes"] == 2
    bp = _json_only(["bench", "policy", "--presets", "[tiny]", "--batch_sizes", "[1]", "--resolutions", "[64]",
                     "--iters", "3", "--warmup", "1"], tmp_path)
    assert bp["rows"]
    assert _json_only(["tasks"], tmp_path)["tasks"]


TINY_QS = ["--target", "press_button", "--minutes", "0.6", "--eval_episodes", "4", "--retain_tasks", "[open_drawer]",
           "--retain_episodes", "2", "--videos", "1", "--num_envs", "2", "--curve_episodes", "0", "--save_every", "1"]


@pytest.mark.slow
def test_quickstart_killed_mid_finetuning_resumes(tmp_path):
    """kill -9 once fine-tuning has a checkpoint; the same command then skips the finished
    evaluation, resumes fine-tuning from its checkpoint (weights that moved), and ends with the
    report and one JSON object."""
    root = tmp_path / "runs"
    args = [sys.executable, "-m", "vla_rft.cli", "quickstart", "--root", str(root), *TINY_QS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    meta = root / "quickstart" / "finetune" / "checkpoints" / "last" / "meta.json"
    t0 = time.time()
    while not (meta.is_file() and json.loads(meta.read_text())["step"] >= 2):
        assert proc.poll() is None, "the quickstart ended before it could be killed"
        assert time.time() - t0 < 300, "no fine-tuning checkpoint after 300 s"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_step = json.loads(meta.read_text())["step"]
    before = (root / "quickstart" / "before" / "summary.json").read_text()
    assert not (root / "quickstart" / "summary.json").exists()

    p = subprocess.run([*args, "--json"], capture_output=True, text=True, env=ENV, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "evaluating the start policy: done earlier" in p.stderr
    assert "resuming the interrupted run" in p.stderr
    s = json.loads(p.stdout)
    assert (root / "quickstart" / "before" / "summary.json").read_text() == before  # not re-run
    assert s["iterations"] > killed_step and s["target"] == "press_button"
    assert s["before"]["per_task"]["press_button"]["episodes"] == 4 == s["after"]["per_task"]["press_button"]["episodes"]
    assert Path(s["report"]).is_file() and "<video" in Path(s["report"]).read_text()
    metrics = [json.loads(x) for x in (root / "quickstart" / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert max(m["step"] for m in metrics) == s["iterations"]

    import torch
    from safetensors.torch import load_file

    from vla_rft.policies.base import resolve_pretrained

    start = load_file(str(Path(resolve_pretrained(PRE)) / "model.safetensors"))
    end = load_file(str(Path(s["finetuned_checkpoint"]) / "model.safetensors"))
    assert any(not torch.equal(start[k], end[k]) for k in start)  # fine-tuning moved the weights

    # a third run with everything done only rebuilds the report; other settings are refused
    again = subprocess.run([*args, "--json"], capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert json.loads(again.stdout)["iterations"] == s["iterations"]
    other = subprocess.run([*args[:-1], "2"], capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert other.returncode == 2 and "other settings (save_every)" in other.stderr
