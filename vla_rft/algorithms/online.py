"""Online RL as a trainer algorithm: a PPO or GRPO learner collecting from a rollout source.

:class:`OnlineRL` is what :class:`vla_rft.trainer.Trainer` runs for ``vla-rft finetune``: each
iteration resets the source's envs with seeds that are a function of the run's seed and the
iteration only (so resumed and distributed runs repeat exactly, and runs with different seeds
see disjoint initial states), collects chunked rollouts with seeded sampling, and hands them to
the learner. PPO collects ``num_chunks`` chunk steps per env; GRPO collects each env's first
episode, groups of ``group_size`` envs sharing one initial state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_rft.algorithms.grpo import GRPO, group_seeds
from vla_rft.algorithms.losses import subsample_obs
from vla_rft.algorithms.rollout import ChunkCollector, ChunkRollout, first_episode_success, flat_obs


def iteration_seeds(base_seed: int, iteration: int, num_envs: int) -> list[int]:
    """PPO's reset seeds at ``iteration``: disjoint across iterations and across run seeds."""
    return [base_seed * 1_000_003 + iteration * num_envs + i for i in range(num_envs)]


def sample_seed(base_seed: int, iteration: int) -> int:
    """The chunk-sampling seed at ``iteration``."""
    return (base_seed * 7_919 + iteration) * 1_009


class OnlineRL:
    """A clipped policy-gradient learner (:class:`~vla_rft.algorithms.ppo.PPO` or
    :class:`~vla_rft.algorithms.grpo.GRPO`) plus the rollout source it collects from."""

    def __init__(self, learner: Any, source: Any, num_chunks: int, seed: int) -> None:
        self.learner, self.source, self.num_chunks, self.seed = learner, source, num_chunks, seed
        self.groups = isinstance(learner, GRPO)
        self.collector = ChunkCollector(source, 1.0 if self.groups else learner.cfg.gamma)
        self.policy, self.optimizer, self.terms = learner.policy, learner.optimizer, learner.terms

    def collect(self, iteration: int) -> ChunkRollout:
        n = self.source.num_envs
        if self.groups:
            cfg = self.learner.cfg
            seeds = group_seeds(self.seed, iteration, n // cfg.group_size, cfg.group_size)
            return self.collector.collect(self.policy, self.num_chunks, seeds, sample_seed(self.seed, iteration),
                                          with_values=False, first_episode_only=True)
        return self.collector.collect(self.policy, self.num_chunks, iteration_seeds(self.seed, iteration, n),
                                      sample_seed(self.seed, iteration))

    def probe_states(self, reference: Any, seed: int, count: int = 64) -> dict[str, Any]:
        """``count`` target-task states the starting policy visits from reset seeds ``seed + i``
        (a fixed set, the same on resume): where the logged forward KL to pi_0 is measured."""
        n = self.source.num_envs
        ro = self.collector.collect(reference, min(self.num_chunks, 8), [seed + i for i in range(n)],
                                    sample_seed(seed, 0), with_values=False)
        return subsample_obs(flat_obs(ro.obs, np.flatnonzero(ro.valid.reshape(-1))), count)

    def update(self, rollout: ChunkRollout, iteration: int, progress: float, rng: np.random.Generator
               ) -> dict[str, float]:
        return self.learner.update(rollout, iteration, progress, rng)

    def env_steps(self, rollout: ChunkRollout) -> int:
        return rollout.env_steps

    def batch_metrics(self, rollout: ChunkRollout, seconds: float) -> dict[str, float]:
        eps = rollout.episodes
        out = {"rollout/episodes": float(len(eps)), "rollout/env_steps_per_s": rollout.env_steps / max(seconds, 1e-9)}
        # Each env's first episode of the window, success or not (one still running when the
        # window closes counts as a failure): unbiased where the episode limit exceeds the window,
        # unlike the success of the episodes that ended (only fast successes end early).
        n = rollout.shape[1]
        ended = {e["env"] for e in eps}
        out["rollout/first_episode_success"] = float(first_episode_success(rollout).mean())
        out["rollout/first_episode_cut"] = float(1.0 - len(ended) / n)
        if eps:
            out["rollout/success_rate"] = float(np.mean([e["success"] for e in eps]))
            out["rollout/return"] = float(np.mean([e["return"] for e in eps]))
            out["rollout/length"] = float(np.mean([e["length"] for e in eps]))
        return out

    def close(self) -> None:
        self.source.close()
