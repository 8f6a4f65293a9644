"""The task interface: scene additions, episode initialization, success, rewards, expert.

A task never steps physics or renders; the environment (:mod:`sims.env`) owns that. This split
(dm_control's physics/task separation) lets another backend reuse the task definitions as long
as it offers :class:`~sims.scene.Physics`'s small interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sims.experts import Expert
from sims.palette import pick_colors
from sims.scene import Physics, SceneBuilder, yaw_quat

TABLE_Z = 0.0  # table top height (world z), metres


@dataclass(frozen=True)
class EpisodeOptions:
    """What the perturbation levels ask of a task when it initializes an episode."""

    heldout_colors: bool = False  # semantic: name/paint objects from the held-out palette


class Task(ABC):
    """Base class of every task; subclasses are registered with ``@register_task``.

    Class attributes describe the task; ``templates`` are training instructions with
    ``str.format`` fields filled from :meth:`initialize_episode`'s return value, and
    ``heldout_templates`` are paraphrases used only by the semantic perturbation.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    templates: ClassVar[tuple[str, ...]] = ()
    heldout_templates: ClassVar[tuple[str, ...]] = ()
    max_episode_steps: ClassVar[int] = 100
    # Bodies (free-jointed or mocap) the execution perturbation may displace mid-episode.
    displaceable: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def build(self, scene: SceneBuilder) -> None:
        """Add the task's bodies to the scene (colours are set per episode, not here)."""

    @abstractmethod
    def bind(self, physics: Physics) -> None:
        """Cache ids/addresses of the task's objects in the compiled model."""

    @abstractmethod
    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        """Randomize object poses/colours; return the fields that fill the instruction."""

    @abstractmethod
    def success(self, physics: Physics) -> bool:
        """The task's success predicate on the current state."""

    @abstractmethod
    def dense_reward(self, physics: Physics) -> float:
        """Staged shaped reward in [0, 1]; 1 exactly when the task is solved."""

    @abstractmethod
    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        """Ground-truth object state for experts and analysis (not part of the observation)."""

    @abstractmethod
    def make_expert(self) -> Expert:
        """A scripted expert that solves the task from :meth:`privileged_state`."""

    # -- shared helpers for subclasses --
    @staticmethod
    def colors(rng: np.random.Generator, n: int, options: EpisodeOptions) -> list[tuple[str, np.ndarray]]:
        return pick_colors(rng, n, options.heldout_colors)


def cube_xml(name: str, half: float, mass: float = 0.1, friction: float = 0.8) -> str:
    """A free-jointed cube named ``name`` (joint ``{name}_joint``, geom ``{name}``)."""
    return f"""
    <body name="{name}" pos="0.5 0 {half}">
      <freejoint name="{name}_joint"/>
      <geom name="{name}" type="box" size="{half} {half} {half}" mass="{mass}"
            friction="{friction} 0.01 0.001" condim="4" rgba="1 1 1 1"/>
    </body>"""


def marker_xml(name: str, radius: float, height: float = 0.002) -> str:
    """A flat visual-only disc on the table (no collisions) marking a goal region."""
    return f"""
    <body name="{name}" pos="0.5 0 {height}" mocap="true">
      <geom name="{name}" type="cylinder" size="{radius} {height}" contype="0"
            conaffinity="0" rgba="1 1 1 0.6"/>
    </body>"""


def place_mocap(physics: Physics, body_id: int, pos: np.ndarray, yaw: float = 0.0) -> None:
    """Move a mocap (static, kinematic) body, e.g. a goal marker."""
    mocap = physics.model.body_mocapid[body_id]
    physics.data.mocap_pos[mocap] = pos
    physics.data.mocap_quat[mocap] = yaw_quat(yaw)


def sample_xy(
    rng: np.random.Generator,
    low: tuple[float, float],
    high: tuple[float, float],
    avoid: list[np.ndarray],
    min_dist: float,
) -> np.ndarray:
    """Uniform xy in a box, at least ``min_dist`` from each point in ``avoid`` (rejection)."""
    for _ in range(1000):
        xy = rng.uniform(low, high)
        if all(np.linalg.norm(xy - a[:2]) >= min_dist for a in avoid):
            return xy
    raise RuntimeError(f"could not place an object {min_dist} m from {len(avoid)} others")


def tolerance(distance: float, scale: float) -> float:
    """Smooth closeness in (0, 1]: 1 at distance 0, about 0.24 at ``distance == scale``."""
    return float(1.0 - np.tanh(distance / scale))
