"""World models: an action-conditioned simulator learned from episodes (see world_models.model),
trained with ``vla-rft world-model train``, used as a rollout source (``--source world-model``)
and evaluated against the real simulator with ``vla-rft world-model eval``."""
