"""Heavy collaborators of ``robots/``, named here and imported only when first used.

``robots/`` runs on a robot computer that may have no torch, lerobot, mujoco or training stack, so
no module in it imports them, not even inside a function: what it needs from them is looked up by
name in :data:`ADAPTERS` (``"module:attribute"``) and imported with :mod:`importlib` at the call
that needs it. Today that is dataset writing (the deploy loop logs LeRobotDataset episodes through
``vla_rft.data.lerobot_io``) and the simulated arm (:class:`robots.mujoco_robot.MujocoRobot`
drives a ``sims`` env). A test (``tests/robots/test_robots_imports.py``) checks both halves:
importing any ``robots`` module loads none of them, and no ``robots`` source names them in an
import statement.

Another implementation can be put under a name with ``register_adapter(name, target,
replace=True)`` (a test double, a different dataset writer with the same interface).
"""

from __future__ import annotations

import importlib
from typing import Any

from robots.config import did_you_mean

ADAPTERS: dict[str, str] = {
    "episode_writer": "vla_rft.data.lerobot_io:EpisodeWriter",
    "sims.make_env": "sims:make_env",
    "sims.make_expert": "sims:make_expert",
    "sims.substeps": "sims.scene:SUBSTEPS",
    "mujoco.mj_forward": "mujoco:mj_forward",
}
"""Adapter name -> ``"package.module:attribute"`` (the attribute may be dotted)."""


def _split(target: str) -> tuple[str, str]:
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"an adapter target is 'package.module:attribute', got {target!r}")
    return module, attr


def register_adapter(name: str, target: str, *, replace: bool = False) -> None:
    """Name ``target`` (``"package.module:attribute"``); ``replace`` allows overriding a name."""
    _split(target)
    if name in ADAPTERS and not replace and ADAPTERS[name] != target:
        raise ValueError(f"adapter '{name}' is already {ADAPTERS[name]!r}; pass replace=True to override")
    ADAPTERS[name] = target


def adapter_target(name: str) -> str:
    """The ``"module:attribute"`` an adapter name stands for (KeyError naming the valid ones)."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown adapter '{name}'{did_you_mean(name, set(ADAPTERS))}") from None


def load_adapter(name: str) -> Any:
    """Import the adapter's module now and return its attribute.

    An ImportError keeps its type (callers may catch ``ModuleNotFoundError``), with a note naming
    the adapter that needed the module.
    """
    module_name, attr = _split(adapter_target(name))
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        exc.add_note(f"robots adapter '{name}' needs module '{module_name}' (not needed to import robots)")
        raise
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
