"""Online RL fine-tuning on action chunks: rollouts + chunk GAE, PPO, GRPO, loss terms.

- :mod:`~vla_rft.algorithms.rollout`: chunked rollouts on vector envs, the buffer, chunk GAE.
- :mod:`~vla_rft.algorithms.ppo`: :func:`ppo_loss` and the :class:`PPO` learner.
- :mod:`~vla_rft.algorithms.grpo`: :func:`grpo_loss`, group advantages, :class:`GRPO`, and the
  :class:`GroupRolloutProvider` interface (simulator now, world model later).
- :mod:`~vla_rft.algorithms.losses`: shared loss pieces and the extra loss terms
  (``term(policy, ref_policy, batch) -> (loss, metrics)``: KL-to-reference, L2-to-init).
"""
