"""The ``vla-rft`` command line: one entry point, one subcommand per job.

Every subcommand takes a typed config dataclass (``--help`` lists its fields with their
documentation), an optional ``--config`` preset, and ``--key value`` overrides. Subcommands that
report numbers take ``--json`` and then print exactly one JSON object on stdout (logs and
progress go to stderr). Bad input exits with status 2 and one line on stderr naming the problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

USAGE = """usage: vla-rft <command> [--config PRESET] [--key value ...]

commands:
  quickstart   collect demos, pretrain the tiny VLA, evaluate it, write a report (minutes on a CPU)
  tasks        list the MuJoCo tasks, their families, instructions, cameras and action size
  collect      run a task's scripted expert and write a LeRobotDataset of demonstrations
  bench sim    measure simulator speed (mj_step, env steps/s with and without camera, robosuite)
  pretrain     multi-task behaviour cloning of a policy on LeRobotDatasets (resumable)
  finetune     online RL fine-tuning of a policy on a task: PPO or GRPO on action chunks (resumable)
  eval         success rates of a policy on tasks (seeded, vectorized, Wilson 95% intervals, videos)
  bench policy measure policy inference latency (presets x batch x resolution) and sizes
  serve        serve a policy over websockets + msgpack (robots.server)
  deploy       run a policy on a robot at a fixed rate, safety-filtered, logging a LeRobotDataset
  wise-ft      interpolate start and fine-tuned weights (WiSE-FT), evaluate target and retention per alpha
  world-model train   learn an action-conditioned world model from LeRobotDatasets (resumable)
  world-model eval    world-model fidelity (open loop, closed loop, videos) and policy ranking against the sim
  report       one static HTML page from run directories: curves, tables, retention, videos, configs

Run 'vla-rft <command> --help' for a command's options."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its config class, the function that runs it, and one line of help."""

    config: Callable[[], type]
    run: Callable[[Any], Any]
    help: str
    group: str | None = None
    positional: str | None = None
    """A list field that takes the command's bare arguments (vla-rft report RUN_DIR...)."""


def _commands() -> dict[str, Command]:
    # Imported lazily so that `vla-rft --help` and light commands start fast.
    from vla_rft.commands import (
        bench,
        bench_policy,
        collect,
        deploy,
        evaluate,
        finetune,
        pretrain,
        quickstart,
        tasks,
        wise_ft,
    )

    return {
        "quickstart": Command(lambda: quickstart.QuickstartConfig, quickstart.run, "quickstart"),
        "tasks": Command(lambda: tasks.TasksConfig, tasks.run, "list tasks"),
        "collect": Command(lambda: collect.CollectConfig, collect.run, "collect demonstrations", "collect"),
        "bench sim": Command(lambda: bench.BenchSimConfig, bench.run_sim, "simulator benchmark"),
        "pretrain": Command(lambda: pretrain.PretrainConfig, pretrain.run, "behaviour cloning", "pretrain"),
        "finetune": Command(lambda: finetune.FinetuneConfig, finetune.run, "RL fine-tuning", "finetune"),
        "eval": Command(lambda: evaluate.EvalConfig, evaluate.run, "evaluate a policy", "eval"),
        "bench policy": Command(lambda: bench_policy.BenchPolicyConfig, bench_policy.run, "policy benchmark"),
        "serve": Command(lambda: deploy.ServeConfig, deploy.run_serve, "policy server"),
        "deploy": Command(lambda: deploy.DeployConfig, deploy.run, "deploy a policy on a robot"),
        "wise-ft": Command(lambda: wise_ft.WiseFTConfig, wise_ft.run, "weight interpolation sweep"),
        "world-model train": Command(lambda: _wm_train().WorldModelTrainConfig, lambda c: _wm_train().run(c),
                                     "train a world model", "world_model"),
        "world-model eval": Command(lambda: _wm_eval().WorldModelEvalConfig, lambda c: _wm_eval().run(c),
                                    "evaluate a world model", "world_model"),
        "report": Command(lambda: _report().ReportConfig, lambda c: _report().run(c), "HTML report of runs",
                          positional="runs"),
    }


def _wm_train() -> Any:
    from world_models import train

    return train


def _wm_eval() -> Any:
    from world_models import evaluate

    return evaluate


def _report() -> Any:
    from vla_rft import report

    return report


def _positional(rest: list[str], field_name: str) -> list[str]:
    """Bare arguments before the first option become ``--field_name '[a,b]'``."""
    bare = []
    while rest and not rest[0].startswith("-"):
        bare.append(rest.pop(0))
    if bare:
        rest = [f"--{field_name}", "[" + ",".join(bare) + "]", *rest]
    return rest


def _split_command(argv: list[str], names: list[str]) -> tuple[str, list[str]]:
    import difflib

    from vla_rft.errors import UsageError

    for n_words in (2, 1):
        head = " ".join(argv[:n_words])
        if head in names:
            return head, argv[n_words:]
    first = argv[0] if argv else ""
    close = difflib.get_close_matches(first, sorted({n.split()[0] for n in names}), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    if first in {n.split()[0] for n in names}:
        subs = sorted(n for n in names if n.startswith(first + " "))
        raise UsageError(f"'{first}' needs a subcommand: {', '.join(subs)}")
    raise UsageError(f"unknown command '{first}'{hint}; commands: {', '.join(sorted(names))}")


_held: list[str] | None = None  # set while a --json command runs: its JSON waits here


def print_json(obj: dict[str, Any]) -> None:
    """Print one JSON object on stdout (the only thing a --json command prints there)."""
    text = json.dumps(obj, default=_json_default) + "\n"
    if _held is not None:
        _held.append(text)
        return
    sys.stdout.write(text)
    sys.stdout.flush()


@contextlib.contextmanager
def json_stdout():
    """While a --json command runs, everything else bound for stdout goes to stderr: Python
    writes (sys.stdout is stderr) and file-descriptor writes of libraries and subprocesses (fd 1
    points at stderr; e.g. transformers prints a wandb banner on import). The JSON that
    print_json held is written to the real stdout when the command returns."""
    global _held
    out = sys.stdout
    out.flush()
    saved = os.dup(1)
    _held, sys.stdout = [], sys.stderr
    try:
        os.dup2(2, 1)
        yield
        held = _held
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
        _held, sys.stdout = None, out
    for text in held:
        out.write(text)
    out.flush()


def _json_default(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vla-rft`` script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    from vla_rft.errors import USER_ERRORS
    from vla_rft.run import warning_log

    warning_log.install()
    try:
        commands = _commands()
        name, rest = _split_command(argv, list(commands))
        cmd = commands[name]
        cfg_cls = cmd.config()
        if any(a in ("-h", "--help") for a in rest):
            import draccus

            draccus.parse(config_class=cfg_cls, args=["--help"], prog=f"vla-rft {name}")
            return 0
        from vla_rft.config import parse_config

        if cmd.positional:
            rest = _positional(list(rest), cmd.positional)
        cfg = parse_config(cfg_cls, rest, group=cmd.group)
        with json_stdout() if getattr(cfg, "json", False) else contextlib.nullcontext():
            result = cmd.run(cfg)
        return int(result) if isinstance(result, int) else 0
    except USER_ERRORS as e:
        print(f"vla-rft: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vla-rft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m vla_rft.cli: run the imported module's main (one copy of its state)
    from vla_rft.cli import main as _main

    sys.exit(_main())
