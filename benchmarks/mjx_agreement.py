"""MJX against the C backend from the same initial states (the C env's resets, copied into MJX):
the worst joint / EE / object-state errors over the horizon, written as JSON.

    python benchmarks/mjx_agreement.py     # -> benchmarks/results/mjx_agreement.json

reach_target: 48 random actions in chunks of 4 (the configuration tests/sims/test_mjx.py checks);
push_cube: the C scripted expert's actions replayed open loop, one per call (contact).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SEEDS = [0, 1, 2, 3]


def summary(err: dict) -> dict:
    checkpoints = [k for k in (1, 5, 10, 25, 50, 100) if k <= len(err["ee"])]
    return {"compared_calls": len(err["ee"]), "worst_joint_rad": float(err["joint"].max()),
            "worst_ee_m": float(err["ee"].max()), "worst_object_m": float(err["object"].max()),
            "ee_m_at_call": {k: float(err["ee"][k - 1]) for k in checkpoints},
            "object_m_at_call": {k: float(err["object"][k - 1]) for k in checkpoints},
            "c_success": err["c_success"].tolist(), "mjx_success": err["mjx_success"].tolist()}


def main() -> int:
    from sims.mjx_env import MjxTask, c_agreement, c_expert_actions, enable_compilation_cache

    enable_compilation_cache()
    rng = np.random.default_rng(0)
    random = (rng.uniform(-1, 1, (len(SEEDS), 48, 7)) * [1, 1, 1, 0.3, 0.3, 0.3, 1]).astype(np.float32)
    out = {"seeds": SEEDS, "command": "python benchmarks/mjx_agreement.py",
           "precision": "MJX float32 + CG solver vs C float64 + Newton"}
    out["reach_target_random_48_steps_chunk_4"] = summary(
        c_agreement(MjxTask("reach_target", reward_type="potential"), SEEDS, random, 4))
    actions, _ = c_expert_actions("push_cube", SEEDS, 100)
    out["push_cube_expert_replay_chunk_1"] = summary(
        c_agreement(MjxTask("push_cube", terminate_on_success=False), SEEDS, actions, 1))
    path = Path("benchmarks/results/mjx_agreement.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
