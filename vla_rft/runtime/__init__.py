"""Where rollouts run: in the learner's process (:class:`LocalRuntime`) or on Ray actors
(:class:`~vla_rft.runtime.ray_runtime.RayRuntime`), behind one interface.

A runtime turns (policy weights, iteration) into a batch: ``collect_chunks`` for PPO (a
:class:`~vla_rft.algorithms.rollout.ChunkRollout`), ``collect_groups`` for GRPO (a
:class:`~vla_rft.algorithms.grpo.GroupRollout`). Both are pure functions of the weights and
the iteration's seeds, so a run gives the same data whichever runtime collects it (for a
given number of workers).
"""

from vla_rft.runtime.local import EnvSpec, LocalRuntime, RolloutRuntime, RolloutWorker, make_runtime

__all__ = ["EnvSpec", "LocalRuntime", "RolloutRuntime", "RolloutWorker", "make_runtime"]
