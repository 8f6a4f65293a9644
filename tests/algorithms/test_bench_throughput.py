"""benchmarks/bench_finetune_throughput.py: the SB3 baseline is sized like the VLA it is compared with."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_finetune_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_finetune_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_sb3_baseline_matches_the_vla_parameter_count(bench):
    interface = bench.policy_interface("pick_cube", ["front", "wrist"], 64)
    assert interface["cameras"] == ["front", "wrist"] and interface["image_size"] == [64, 64]
    vla = bench.build_vla("tiny_kp", interface, 8, "hashing", seed=0)
    target = vla.num_parameters()
    env = bench.make_sb3_env("pick_cube", {"obs_mode": "rgb", "cameras": ["front", "wrist"], "image_size": 64})
    try:
        space = env.observation_space
        assert sorted(space.spaces) == ["front", "state", "wrist"]  # no instruction, no dots (ModuleDict keys)
        kwargs, count = bench.sb3_policy_kwargs(space, env.action_space, target)
        assert abs(count - target) <= 0.1 * target
        # the count is that of the policy SB3 builds on the transposed (CHW) image space
        assert bench.sb3_trainable_params(bench.sb3_observation_space(space), env.action_space, kwargs) == count
        assert bench.sb3_observation_space(space)["front"].shape == (3, 64, 64)
    finally:
        env.close()
