"""Measure every scripted expert's success rate: ``python -m sims.measure_experts``.

Episodes use seeds ``0 .. episodes-1`` in state mode (no rendering); prints one line per task
(or one JSON object with ``--json``) and writes nothing else.
"""

from __future__ import annotations

import argparse
import json
import time

import sims


def measure(task: str, episodes: int, perturbation: str = "none") -> dict[str, float]:
    """Success rate and mean episode length of ``task``'s expert over seeds 0..episodes-1."""
    env = sims.make_env(task, obs_mode="state", perturbation=perturbation)
    expert = sims.make_expert(task, env)
    successes, lengths, steps, start = 0, [], 0, time.perf_counter()
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            steps += 1
            done = terminated or truncated
        successes += bool(info["is_success"])
        lengths.append(info["elapsed_steps"])
    env.close()
    return {
        "success_rate": successes / episodes,
        "mean_length": sum(lengths) / episodes,
        "steps_per_s": steps / (time.perf_counter() - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every built-in task (robosuite's and Meta-World's by name)")
    parser.add_argument("--perturbation", default="none")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    names = args.tasks or [spec.name for spec in sims.list_tasks() if spec.family not in ("robosuite", "metaworld")]
    results = {name: measure(name, args.episodes, args.perturbation) for name in names}
    if args.json:
        print(json.dumps({"episodes": args.episodes, "seeds": f"0..{args.episodes - 1}",
                          "perturbation": args.perturbation, "results": results}, indent=2))
        return
    print(f"{'task':<14} {'success':>8} {'mean len':>9} {'steps/s':>8}   ({args.episodes} episodes, seeds 0..{args.episodes - 1})")
    for name, r in results.items():
        print(f"{name:<14} {r['success_rate']:>8.2f} {r['mean_length']:>9.1f} {r['steps_per_s']:>8.0f}")


if __name__ == "__main__":
    main()
