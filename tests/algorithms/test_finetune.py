"""``vla-rft finetune`` end to end on reach_target with a tiny policy (a few seconds each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from sim_fixtures import save_sim_policy

from vla_rft.algorithms.losses import NonFiniteLossError
from vla_rft.checkpoint import load_checkpoint
from vla_rft.cli import main
from vla_rft.commands.finetune import FinetuneConfig, _resumed_config, train
from vla_rft.policies import load_policy
from vla_rft.run import LoggingConfig

VOLATILE = {"time", "iteration_seconds", "wall_seconds", "rollout/env_steps_per_s"}


def _cfg(tmp_path, name, algo="ppo", **kw):
    policy = tmp_path / "start"
    if not policy.exists():
        save_sim_policy(policy)
    base = {"algo": algo, "policy": str(policy), "task": "reach_target", "iterations": 4, "num_envs": 2,
            "rollout_len": 2, "time_limit": 6, "eval_every": 2, "eval_episodes": 2, "eval_num_envs": 2,
            "save_every": 1, "logging": LoggingConfig(root=str(tmp_path), name=name, wandb="disabled")}
    cfg = FinetuneConfig(**{**base, **kw})
    cfg.grpo.groups, cfg.grpo.group_size, cfg.grpo.max_chunks = 1, 2, 2
    cfg.optim.lr_policy = cfg.optim.lr_noise = 1e-3
    return cfg


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, algo):
    full = train(_cfg(tmp_path, "full", algo))
    stopped = _cfg(tmp_path, "split", algo, stop_at=2)
    part = train(stopped)
    assert part["iteration"] == 2 and not part["finished"]
    resumed = train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "split"))))
    assert resumed["finished"] and resumed["env_steps"] == full["env_steps"]
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.counters == b.counters == {"iteration": 4, "env_steps": full["env_steps"]}
    # last, best and reference are policies vla-rft eval can load; fine-tuning moved the weights
    for tag in ("last", "best", "reference"):
        load_policy(tmp_path / "full" / "checkpoints" / tag)
    ref = load_checkpoint(tmp_path / "full" / "checkpoints" / "reference")
    moved = any(not torch.equal(a.tensors[k], ref.tensors[k]) for k in a.tensors)
    assert moved == (algo == "ppo")  # GRPO: no success in 6 steps, every group has zero advantage
    rec = _metrics(tmp_path / "full")
    assert rec[0]["step"] == 0 and "eval/success_rate" in rec[0]  # the starting policy, evaluated first
    assert full["start/eval/success_rate"] == rec[0]["eval/success_rate"]
    assert {"train/kl_to_start", "train/approx_kl", "train/clip_frac", "eval/success_rate", "eval/ci95_high",
            "env_steps"} <= set(rec[2])
    assert (rec[2]["train/kl_to_start"] > 0) == (algo == "ppo")


def test_wall_clock_budget_ends_the_run_evaluated_and_checkpointed(tmp_path):
    out = train(_cfg(tmp_path, "budget", iterations=50, eval_every=0, minutes=1e-6))
    assert out["finished"] and out["stopped_by"] == "minutes" and out["iteration"] == 1
    assert "eval/success_rate" in out  # the final evaluation ran although periodic ones are off
    last = load_checkpoint(tmp_path / "budget" / "checkpoints" / "last")
    assert last.counters == {"iteration": 1, "env_steps": out["env_steps"]}
    assert last.extra["wall_seconds"] > 0
    rows = [json.loads(x) for x in (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and rows[0]["wall_seconds"] > 0
    with pytest.raises(Exception, match="minutes"):
        train(_cfg(tmp_path, "bad", minutes=0.0))


class _NaNAt:
    """A loss term that turns NaN at one iteration (fault injection)."""

    name = "nan_at"

    def __init__(self, calls: int) -> None:
        self.calls, self.seen = calls, 0

    def __call__(self, policy, ref, batch):
        self.seen += 1
        bad = self.seen > self.calls
        return torch.tensor(float("nan") if bad else 0.0), {}


def test_nan_stops_without_a_bad_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "nan")
    cfg.ppo.minibatches, cfg.ppo.epochs = 1, 1
    with pytest.raises(NonFiniteLossError, match="iteration 2"):
        train(cfg, extra_terms=[_NaNAt(calls=2)])  # iterations 0 and 1 fine, 2 is NaN
    last = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last")
    assert last.counters["iteration"] == 2
    assert all(bool(torch.isfinite(t).all()) for t in last.tensors.values())
    steps = [json.loads(x)["step"] for x in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]  # the start evaluation, then iterations 0 and 1; nothing from the NaN one


def test_cli_nan_learning_rate_exits_with_one_line(tmp_path, capsys):
    save_sim_policy(tmp_path / "start")
    code = main(["finetune", "--policy", str(tmp_path / "start"), "--task", "reach_target", "--iterations", "3",
                 "--num_envs", "2", "--rollout_len", "1", "--time_limit", "4", "--eval_every", "10",
                 "--eval_episodes", "1", "--save_every", "1", "--optim.lr_value", "nan", "--logging.wandb",
                 "disabled", "--logging.root", str(tmp_path), "--logging.name", "cli"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("vla-rft: error: ") and "nan" in err[-1]
    assert not (tmp_path / "cli" / "checkpoints" / "last").exists()


@pytest.mark.slow
def test_ray_source_matches_the_in_process_sim_source(tmp_path):
    """Ray actors step slices of the same seeded envs; inference stays in the learner, so the
    two sources give the same run."""
    pytest.importorskip("ray")
    import ray

    local = train(_cfg(tmp_path, "local", num_envs=4, iterations=2, ray_workers=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = train(_cfg(tmp_path, "ray", num_envs=4, iterations=2, source="ray", ray_workers=2))
    finally:
        ray.shutdown()
    assert remote["env_steps"] == local["env_steps"]
    assert _metrics(tmp_path / "ray") == _metrics(tmp_path / "local")


# ------------------------------------------------------------------ the core, through new parts
def _fake_cfg(tmp_path, name, algo="ppo", **kw):
    """finetune on the numpy point-home source: every iteration has successes, so PPO and GRPO
    both move the weights; no harness evaluation (the task is not a sims task)."""
    from policy_fixtures import make_policy

    start = tmp_path / "point-start"
    if not start.exists():
        make_policy(seed=0, init_log_std=-0.5).save(start)
    base = {"algo": algo, "policy": str(start), "task": "point", "source": "fake", "iterations": 4, "num_envs": 4,
            "rollout_len": 3, "eval_episodes": 0, "save_every": 1,
            "logging": LoggingConfig(root=str(tmp_path), name=name, wandb="disabled")}
    cfg = FinetuneConfig(**{**base, **kw})
    cfg.grpo.groups, cfg.grpo.group_size, cfg.grpo.max_chunks = 2, 4, 3
    cfg.optim.lr_policy = cfg.optim.lr_noise = 1e-3
    return cfg


class _NoisyL2:
    """A stateful loss term: its own RNG draws a random weight each call, and it counts calls.
    Resume must restore both, or the resumed run's losses differ."""

    name = "noisy_l2"

    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(123)
        self.calls = 0

    def __call__(self, policy, ref, batch):
        self.calls += 1
        w = torch.rand((), generator=self.gen) * 1e-3 * self.calls
        sq = sum(((p - r.detach()) ** 2).sum() for p, r in zip(policy.parameters(), ref.parameters()))
        return w * sq, {"w": float(w)}

    def state_dict(self):
        return {"gen": self.gen.get_state(), "calls": torch.tensor(self.calls)}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])
        self.calls = int(state["calls"])


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_kill_and_resume_with_moving_weights_and_a_stateful_term(tmp_path, algo):
    full = train(_fake_cfg(tmp_path, "full", algo), extra_terms=[_NoisyL2()])
    train(_fake_cfg(tmp_path, "split", algo, stop_at=2), extra_terms=[_NoisyL2()])
    resumed = train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "split"))), extra_terms=[_NoisyL2()])
    assert resumed["finished"] and resumed["env_steps"] == full["env_steps"]
    full_rows, split_rows = _metrics(tmp_path / "full"), _metrics(tmp_path / "split")
    assert full_rows == split_rows and "train/loss/noisy_l2/w" in full_rows[-1]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last")
    ref = load_checkpoint(tmp_path / "full" / "checkpoints" / "reference")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert any(not torch.equal(a.tensors[k], ref.tensors[k]) for k in a.tensors)  # the weights moved
    assert int(a.state["term.noisy_l2.calls"]) == int(b.state["term.noisy_l2.calls"]) > 0
    # the stateful term really matters: resuming with a fresh term gives other losses
    train(_fake_cfg(tmp_path, "fresh", algo, stop_at=2), extra_terms=[_NoisyL2()])
    bad = _NoisyL2()
    bad.load_state_dict = lambda state: None  # a term that forgets its state on resume
    train(_resumed_config(FinetuneConfig(resume=str(tmp_path / "fresh"))), extra_terms=[bad])
    assert _metrics(tmp_path / "fresh") != full_rows


def test_a_newly_registered_source_fine_tunes_without_touching_the_trainer(tmp_path):
    """A source registered by name (here: the point task with a wider goal, counting its resets)
    is picked by --source and fine-tuned through; the trainer and finetune are unchanged."""
    from vla_rft.sources import register_source
    from vla_rft.sources.fake import PointHomeSource

    made: list[PointHomeSource] = []

    @register_source("test_wide_points")
    def _make(spec):
        src = PointHomeSource(spec.num_envs, spec.chunk_size, radius=0.6)
        made.append(src)
        return src

    out = train(_fake_cfg(tmp_path, "custom", source="test_wide_points", iterations=3))
    assert out["finished"] and out["source"] == "test_wide_points" and len(made) == 1
    assert 0 < out["env_steps"] <= 3 * 4 * 3 * 4  # iterations x envs x chunks x h, less where episodes ended
    rows = _metrics(tmp_path / "custom")
    assert len(rows) == 3 and all(r["rollout/episodes"] > 0 for r in rows)
    last = load_checkpoint(tmp_path / "custom" / "checkpoints" / "last")
    ref = load_checkpoint(tmp_path / "custom" / "checkpoints" / "reference")
    assert any(not torch.equal(last.tensors[k], ref.tensors[k]) for k in last.tensors)
    with pytest.raises(Exception, match="unknown rollout source 'nope'"):
        train(_fake_cfg(tmp_path, "bad", source="nope"))


def test_rollout_success_counts_episodes_cut_by_the_window(tmp_path):
    """With episodes longer than the collection window only fast successes end inside it, so the
    success of the ended episodes reads 1.0; the first-episode success counts a cut episode as a
    failure, and the cut fraction says how many were cut. With short episodes nothing is cut."""
    train(_fake_cfg(tmp_path, "long", time_limit=10_000, iterations=2))
    rows = _metrics(tmp_path / "long")
    assert any(r["rollout/first_episode_cut"] > 0 for r in rows)
    for r in rows:
        assert r["rollout/first_episode_success"] == pytest.approx(1.0 - r["rollout/first_episode_cut"])
        if r["rollout/episodes"] > 0:
            assert r["rollout/success_rate"] == 1.0  # the biased figure: only successes end early
    train(_fake_cfg(tmp_path, "short", time_limit=2, iterations=2))
    rows = _metrics(tmp_path / "short")
    assert all(r["rollout/first_episode_cut"] == 0.0 for r in rows)


def test_a_rollout_window_shorter_than_the_episodes_is_said(capsys):
    """PPO with a window shorter than the task's episodes says so in one line, naming the
    --rollout_len that covers one; a window that covers the episode says nothing."""
    from types import SimpleNamespace

    from vla_rft.commands.finetune import _check_rollout_window

    policy = SimpleNamespace(spec=SimpleNamespace(chunk_size=8))
    _check_rollout_window(FinetuneConfig(task="pick_cube", rollout_len=5), policy)  # 80-step episodes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rollout_len 5 (40 steps)" in err and "--rollout_len 10 covers" in err
    _check_rollout_window(FinetuneConfig(task="pick_cube", rollout_len=10), policy)
    assert capsys.readouterr().err == ""


def test_the_learning_rate_schedule_follows_the_wall_clock_budget(tmp_path):
    """With --minutes the schedule's progress is the time fraction when that is larger: a run cut
    by its budget ends near the bottom of its cosine whatever the machine's speed."""
    cfg = _fake_cfg(tmp_path, "clock", iterations=1000, minutes=0.03, save_every=1000)
    cfg.optim.min_lr_ratio = 0.1
    out = train(cfg)
    assert out["stopped_by"] == "minutes" and out["iteration"] < 500
    rows = _metrics(tmp_path / "clock")
    progress = [r["progress"] for r in rows]
    assert progress == sorted(progress) and progress[-1] > 0.8 > rows[-1]["step"] / 1000
    assert rows[-1]["train/lr/policy"] < 0.25 * 1e-3


def test_without_a_terminal_each_evaluation_prints_one_line(tmp_path, capsys):
    train(_cfg(tmp_path, "log"))  # stderr is captured (not a terminal): no progress bar
    lines = [x for x in capsys.readouterr().err.splitlines() if "eval success target" in x]
    assert [x.split(",")[0] for x in lines] == ["finetune ppo: iteration 2/4", "finetune ppo: iteration 4/4"]


_KILL_CHILD = r"""
import sys, time
sys.path.insert(0, {fixtures!r})
from vla_rft.sources import register_source
from vla_rft.sources.fake import PointHomeSource
from test_finetune import _fake_cfg, _NoisyL2
from vla_rft.commands.finetune import FinetuneConfig, train, _resumed_config
from pathlib import Path


class Slow(PointHomeSource):  # slow enough that a kill lands between checkpoints
    def step(self, chunks):
        time.sleep(0.05)
        return super().step(chunks)


register_source("slow_points")(lambda spec: Slow(spec.num_envs, spec.chunk_size))
tmp, name, algo, resume = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "resume"
if resume:
    cfg = _resumed_config(FinetuneConfig(resume=str(tmp / name)))
else:
    cfg = _fake_cfg(tmp, name, algo, source="slow_points", iterations=12, save_every=3)
train(cfg, extra_terms=[_NoisyL2()])
"""


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_sigkill_mid_run_then_resume_logs_what_an_uninterrupted_run_logs(tmp_path, algo):
    """A real kill -9 (not --stop_at) between checkpoints: the resumed run drops the records the
    killed process logged past its last checkpoint, redoes those iterations, and ends with the
    metrics and weights of an uninterrupted run (weights that move, a stateful loss term)."""
    import signal
    import subprocess
    import time

    here = Path(__file__).resolve().parent
    script = tmp_path / "child.py"
    script.write_text(_KILL_CHILD.format(fixtures=str(here.parent / "policies")))
    env = {**__import__("os").environ, "PYTHONPATH": str(here)}

    def child(name, mode):
        return subprocess.Popen([sys.executable, str(script), str(tmp_path), name, algo, mode], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert child("full", "new").wait(timeout=300) == 0
    proc = child("killed", "new")
    metrics, meta = tmp_path / "killed" / "metrics.jsonl", tmp_path / "killed" / "checkpoints" / "last" / "meta.json"
    t0 = time.time()
    while not (meta.is_file() and json.loads(meta.read_text())["step"] >= 3 and metrics.is_file()
               and len(metrics.read_text().splitlines()) >= json.loads(meta.read_text())["step"] + 1):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() - t0 < 240
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt_step = json.loads(meta.read_text())["step"]
    logged = len(metrics.read_text().splitlines())
    assert 3 <= ckpt_step < 12 and logged > ckpt_step  # killed between checkpoints, past the last one
    assert child("killed", "resume").wait(timeout=300) == 0
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "full")
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last")
    ref = load_checkpoint(tmp_path / "full" / "checkpoints" / "reference")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert any(not torch.equal(a.tensors[k], ref.tensors[k]) for k in a.tensors)
