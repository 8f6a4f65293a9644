"""Reach: bring the gripper to a coloured, visual-only target ball."""

from __future__ import annotations

import numpy as np

from sims.experts import OPEN, Expert, Phase, at
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder
from sims.task import EpisodeOptions, Task, place_mocap, tolerance


@register_task("reach_target")
class ReachTarget(Task):
    """Move the gripper's pinch point within 2.5 cm of a floating target ball."""

    family = "reach"
    templates = (
        "reach the {color} ball",
        "move the gripper to the {color} sphere",
        "touch the {color} marker with the gripper",
    )
    heldout_templates = (
        "bring your hand over to the {color} orb",
        "put the fingertips on the {color} dot",
    )
    max_episode_steps = 60
    displaceable = ("target",)
    SUCCESS_DIST = 0.025

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(
            '<body name="target" mocap="true" pos="0.5 0 0.2">'
            '<geom name="target" type="sphere" size="0.02" contype="0" conaffinity="0"/></body>'
        )

    def bind(self, physics: Physics) -> None:
        self._mocap = physics.model.body_mocapid[physics.body_id("target")]
        self._geom = physics.geom_id("target")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        pos = rng.uniform([0.30, -0.25, 0.05], [0.65, 0.25, 0.30])
        place_mocap(physics, physics.body_id("target"), pos)
        (name, rgba), = self.colors(rng, 1, options)
        physics.model.geom_rgba[self._geom] = rgba
        return {"color": name}

    def _dist(self, physics: Physics) -> float:
        return float(np.linalg.norm(physics.ee_pos() - physics.data.mocap_pos[self._mocap]))

    def success(self, physics: Physics) -> bool:
        return self._dist(physics) < self.SUCCESS_DIST

    def dense_reward(self, physics: Physics) -> float:
        return tolerance(self._dist(physics), 0.1)

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        return {"target": physics.data.mocap_pos[self._mocap].copy()}

    def make_expert(self) -> Expert:
        return Expert([Phase(at("target"), OPEN, tol=0.005)])
