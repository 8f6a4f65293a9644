"""MuJoCo task suite of vla-rft: an arm of our own, language-conditioned tasks, experts.

Importing ``sims`` registers every task with gymnasium as ``vla_rft/<CamelName>-v0``.
The public API for the rest of the project:

- :func:`list_tasks` — one :class:`TaskSpec` per registered task.
- :func:`make_env` — a gymnasium env for a task name (kwargs of :class:`sims.env.SimEnv`).
- :func:`make_vec_env` — ``num_envs`` copies in a sync or async gymnasium vector env.
- :func:`make_expert` — the task's scripted expert bound to an env: ``expert(obs) -> action``.
- :func:`register_task` — decorator for tasks defined outside this package.
"""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend when first imported: without a display, render headless
# through EGL (software llvmpipe on a CPU machine). An explicit MUJOCO_GL always wins.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from sims import tasks as _tasks  # noqa: F401  (registers the built-in tasks)
from sims.env import STATE_DIM, SimEnv
from sims.metaworld_env import MetaWorldEnv  # registers Meta-World's MT10 tasks; needs no metaworld
from sims.palette import TRAIN_COLORS
from sims.registry import get_task_class, register_task, task_names
from sims.robosuite_env import RobosuiteEnv  # registers robosuite's tasks; needs no robosuite
from sims.scene import CAMERAS
from vla_rft.contract import ARM_ACTION_DIM

__all__ = [
    "STATE_DIM",
    "SimEnv",
    "TaskSpec",
    "gym_id",
    "list_tasks",
    "make_env",
    "make_expert",
    "make_vec_env",
    "register_gym_envs",
    "register_task",
]


@dataclass(frozen=True)
class TaskSpec:
    """What outside code needs to know about a task without building it."""

    name: str
    family: str
    instructions: tuple[str, ...]  # training templates filled with the training palette
    cameras: tuple[str, ...]
    action_dim: int
    state_dim: int
    max_episode_steps: int
    gym_id: str


def gym_id(task_name: str) -> str:
    """Gymnasium id of a task: ``pick_cube`` -> ``vla_rft/PickCube-v0``."""
    return "vla_rft/" + "".join(part.capitalize() for part in task_name.split("_")) + "-v0"


def _fill(template: str, colors: list[str], i: int) -> str:
    """Fill every field of ``template`` with distinct colours, the first being ``colors[i]``."""
    fields = {"color": colors[i]}
    rest = [c for c in colors if c != colors[i]]
    for key, value in zip(("other", "pad", "goal", "base", "bin", "mark"), rest * 2, strict=False):
        fields[key] = value
    return template.format(**fields)


def list_tasks() -> list[TaskSpec]:
    """Specs of every registered task, sorted by name."""
    colors = sorted(TRAIN_COLORS)
    specs = []
    for name in task_names():
        cls = get_task_class(name)
        # dict.fromkeys: a template with no colour field (robosuite's, Meta-World's) gives one instruction
        instructions = tuple(dict.fromkeys(_fill(t, colors, i) for t in cls.templates for i in range(len(colors))))
        specs.append(TaskSpec(name, cls.family, instructions, CAMERAS, ARM_ACTION_DIM,
                              getattr(cls, "state_dim", STATE_DIM), cls.max_episode_steps, gym_id(name)))
    return specs


def register_gym_envs() -> None:
    """Register every task (including ones registered after import) with gymnasium.

    A task class may name its own env class in ``entry_point`` (robosuite's tasks do)."""
    for name in task_names():
        if gym_id(name) not in gym.registry:
            cls = get_task_class(name)
            gym.register(gym_id(name), entry_point=getattr(cls, "entry_point", "sims.env:SimEnv"),
                         kwargs={"task": name}, max_episode_steps=cls.max_episode_steps)


def make_env(task_name: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for a task name; kwargs go to :class:`SimEnv` (and ``gym.make``), or to
    :class:`sims.robosuite_env.RobosuiteEnv` / :class:`sims.metaworld_env.MetaWorldEnv` for a
    robosuite / Meta-World task."""
    get_task_class(task_name)  # raises ValueError listing valid names
    register_gym_envs()
    env = gym.make(gym_id(task_name), **kwargs)
    env.unwrapped.episode_limit = env.spec.max_episode_steps if env.spec is not None else None
    return env


def make_vec_env(
    task_name: str, num_envs: int, vectorization: str = "sync", **kwargs: Any
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a task as a gymnasium vector env (``"sync"`` or ``"async"``).

    Async workers are started with ``spawn`` (a forked child inherits the parent's OpenGL/EGL
    state and can hang once the parent has rendered) and with ``shared_memory=False``:
    gymnasium 1.x reads a ``Text`` space out of shared memory only once, at construction, so
    with shared memory every later ``task`` string would be stale. Pipes carry the
    observations instead; at 64x64 that costs little next to rendering.
    """
    get_task_class(task_name)
    fns = [lambda: make_env(task_name, **kwargs) for _ in range(num_envs)]
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv(fns)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn")
    from vla_rft.errors import UserInputError

    raise UserInputError(f"unknown vectorization '{vectorization}'; choose 'sync' or 'async'")


def make_expert(task_name: str, env: gym.Env) -> Callable[[Any], np.ndarray]:
    """The scripted expert of ``task_name`` driving ``env`` (reads its privileged state).

    The returned callable takes the current observation (unused: the expert is privileged)
    and returns a float32 action; it resets itself when the env's episode restarts.
    """
    sim = env.unwrapped
    if not isinstance(sim, SimEnv | RobosuiteEnv | MetaWorldEnv) or sim.task.name != get_task_class(task_name).name:
        raise ValueError(f"make_expert('{task_name}') needs a suite env of that task, got {sim}")
    expert = sim.make_expert() if isinstance(sim, MetaWorldEnv) else sim.task.make_expert()

    def act(obs: Any = None) -> np.ndarray:
        return expert(sim.privileged_state())

    return act


register_gym_envs()
