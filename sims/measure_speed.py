"""Measure env steps/s: ``python -m sims.measure_speed [--task pick_cube] [--steps 500]``.

Prints the raw physics rate (``mj_step`` with 50 substeps on the task's scene, i.e. the
ceiling for one control step), env steps/s in state mode, and with one 64x64 camera.
Actions are random; episodes reset when they end. Writes nothing.
"""

from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np

import sims
from sims.scene import SUBSTEPS


def raw_rate(task: str, steps: int) -> float:
    """Control steps/s of bare ``mj_step(nstep=SUBSTEPS)`` on the task's compiled scene."""
    env = sims.make_env(task, obs_mode="state")
    env.reset(seed=0)
    m, d = env.unwrapped.physics.model, env.unwrapped.physics.data
    start = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(m, d, nstep=SUBSTEPS)
    return steps / (time.perf_counter() - start)


def env_rate(task: str, steps: int, **kwargs: object) -> float:
    """Env steps/s under random actions, through ``gymnasium.make`` and its wrappers."""
    env = sims.make_env(task, **kwargs)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, 7)).astype(np.float32)
    env.reset(seed=0)
    env.step(actions[0])  # warm up (creates renderers)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pick_cube")
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    raw = raw_rate(args.task, args.steps)
    state = env_rate(args.task, args.steps, obs_mode="state")
    camera = env_rate(args.task, args.steps, cameras=["front"], image_size=64)
    both = env_rate(args.task, args.steps, image_size=64)
    print(f"task {args.task}: raw mj_step(nstep={SUBSTEPS}) {raw:.0f}/s | state {state:.0f}/s "
          f"({state / raw:.0%} of raw) | 1 cam 64x64 {camera:.0f}/s | 2 cams 64x64 {both:.0f}/s")


if __name__ == "__main__":
    main()
