"""Push family: slide a cube across the table onto a goal marker, without grasping it."""

from __future__ import annotations

import numpy as np

from sims.experts import CLOSED, Expert, Phase, above, at
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder
from sims.task import EpisodeOptions, Task, cube_xml, marker_xml, place_mocap, tolerance
from sims.tasks.pick import CubeObject

CUBE_HALF = 0.025
PUSH_DIST = 0.12
FINGER_HALF = 0.012  # half thickness of the closed fingers (the pushing paddle)


@register_task("push_cube")
class PushCube(Task):
    """Push the cube until its centre is within 4 cm of the goal marker."""

    family = "push"
    templates = (
        "push the {color} cube to the {goal} marker",
        "slide the {color} block onto the {goal} circle",
        "nudge the {color} cube over to the {goal} target",
    )
    heldout_templates = (
        "shove the {color} box until it covers the {goal} spot",
        "drive the {color} brick along the table to the {goal} disc",
    )
    max_episode_steps = 100
    displaceable = ("cube",)
    SUCCESS_DIST = 0.04

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(cube_xml("cube", CUBE_HALF, mass=0.2, friction=0.5))
        scene.add_body(marker_xml("goal", 0.04))

    def bind(self, physics: Physics) -> None:
        self.cube = CubeObject(physics, "cube")
        self._goal = physics.body_id("goal")
        self._goal_geom = physics.geom_id("goal")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        xy = rng.uniform([0.38, -0.15], [0.52, 0.15])
        self.cube.place(xy, CUBE_HALF, rng.uniform(-np.pi, np.pi))
        angle = rng.uniform(-2.0, 2.0)  # away from the robot or sideways, never toward it
        goal = xy + PUSH_DIST * np.array([np.cos(angle), np.sin(angle)])
        place_mocap(physics, self._goal, np.array([goal[0], goal[1], 0.002]))
        (name, rgba), (goal_name, goal_rgba) = self.colors(rng, 2, options)
        self.cube.paint(rgba)
        physics.model.geom_rgba[self._goal_geom] = [*goal_rgba[:3], 0.8]
        return {"color": name, "goal": goal_name}

    def _goal_xy(self, physics: Physics) -> np.ndarray:
        return physics.data.mocap_pos[physics.model.body_mocapid[self._goal], :2]

    def _distance(self, physics: Physics) -> float:
        return float(np.linalg.norm(self.cube.pos()[:2] - self._goal_xy(physics)))

    def success(self, physics: Physics) -> bool:
        return self._distance(physics) < self.SUCCESS_DIST

    def dense_reward(self, physics: Physics) -> float:
        """Staged: get behind the cube (0.3), then progress toward the goal (0.7)."""
        start = self.privileged_state(physics)["push_start"]
        reach = 0.3 * tolerance(float(np.linalg.norm(physics.ee_pos() - start)), 0.05)
        progress = np.clip(1.0 - self._distance(physics) / PUSH_DIST, 0.0, 1.0)
        return float(reach + 0.69 * progress)

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        """Cube and goal, plus the pushing geometry the expert follows.

        ``push_start`` is behind the cube on the goal line, ``push_end`` where the paddle
        stops with the cube on the goal; ``lateral`` is the gripper's distance from that line.
        """
        cube = self.cube.pos().copy()
        goal = np.array([*self._goal_xy(physics), CUBE_HALF])
        line = goal[:2] - cube[:2]
        direction = line / max(float(np.linalg.norm(line)), 1e-6)
        back = CUBE_HALF * (abs(direction[0]) + abs(direction[1])) + FINGER_HALF + 0.02
        start = cube - np.array([*direction, 0.0]) * back
        end = goal - np.array([*direction, 0.0]) * (CUBE_HALF + FINGER_HALF)
        rel = physics.ee_pos()[:2] - cube[:2]
        lateral = abs(rel[0] * direction[1] - rel[1] * direction[0])
        return {
            "cube": cube,
            "goal": goal,
            "push_start": start,
            "push_end": end,
            "lateral": np.array(lateral),
            "distance": np.array(self._distance(physics)),
        }

    def make_expert(self) -> Expert:
        off_line = lambda p: bool(p["lateral"] > 0.025)
        return Expert(
            [
                Phase(above("push_start", 0.10), CLOSED, tol=0.015),
                Phase(at("push_start", -0.005), CLOSED, tol=0.008, max_speed=0.7),
                Phase(at("push_end", -0.005), CLOSED, max_speed=0.5,
                      until=lambda p: bool(p["distance"] < 0.01), restart_if=off_line),
                Phase(above("push_end", 0.10), CLOSED),
            ]
        )
