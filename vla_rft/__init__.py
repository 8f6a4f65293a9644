"""vla-rft: reinforcement fine-tuning of vision-language-action robot policies.

Importing the package is cheap (no torch, no mujoco): heavy modules are imported by the
subpackages that need them, so ``robots/`` can use :mod:`vla_rft.contract` on a robot computer.
"""

__version__ = "0.1.0"
