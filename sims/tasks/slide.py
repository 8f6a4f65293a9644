"""Slide family: push a block along a rail to the marked position."""

from __future__ import annotations

import numpy as np

from sims.experts import CLOSED, Expert, Phase, above, at
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder
from sims.task import EpisodeOptions, Task, place_mocap, tolerance

RAIL_HALF = 0.15  # rail half length along world y (m)
BLOCK_HALF_Y = 0.025
BLOCK_Z = 0.035  # block centre height
FINGER_HALF = 0.012
SUCCESS_DIST = 0.015


@register_task("slide_block")
class SlideBlock(Task):
    """The block slides on a rail along world y; move it within 1.5 cm of the marker."""

    family = "slide"
    templates = (
        "slide the {color} block to the marker",
        "move the {color} slider along the rail to the line",
        "push the {color} block on the rail to the {mark} mark",
    )
    heldout_templates = (
        "shift the {color} carriage until it lines up with the {mark} stripe",
        "glide the {color} slider over to the notch",
    )
    max_episode_steps = 80
    displaceable = ()

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(
            f"""
    <body name="rail" mocap="true" pos="0.5 0 0">
      <geom type="box" pos="0 0 0.005" size="0.015 {RAIL_HALF + 0.03} 0.005" rgba="0.3 0.3 0.3 1"/>
      <geom name="mark" type="box" pos="0 0 0.011" size="0.045 0.004 0.001" contype="0"
            conaffinity="0" rgba="1 1 1 1"/>
      <body name="block" pos="0 0 {BLOCK_Z}">
        <joint name="block" type="slide" axis="0 1 0" range="-{RAIL_HALF} {RAIL_HALF}"
               damping="3" limited="true"/>
        <geom name="block" type="box" size="0.03 {BLOCK_HALF_Y} 0.025" mass="0.2"/>
      </body>
    </body>"""
        )

    def bind(self, physics: Physics) -> None:
        self._rail = physics.body_id("rail")
        self._mark = physics.geom_id("mark")
        self._adr = physics.joint_qpos_adr("block")
        self._block = physics.geom_id("block")
        self._block_body = physics.body_id("block")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        place_mocap(physics, self._rail, np.array([rng.uniform(0.42, 0.55), rng.uniform(-0.08, 0.08), 0.0]))
        start = rng.uniform(-0.10, 0.10)
        shift = rng.uniform(0.06, 0.12) * rng.choice([-1.0, 1.0])
        if abs(start + shift) > 0.12:
            shift = -shift
        physics.data.qpos[self._adr] = start
        physics.model.geom_pos[self._mark, 1] = start + shift
        (name, rgba), (mark, mark_rgba) = self.colors(rng, 2, options)
        physics.model.geom_rgba[self._block] = rgba
        physics.model.geom_rgba[self._mark] = mark_rgba
        return {"color": name, "mark": mark}

    def _error(self, physics: Physics) -> float:
        return float(physics.model.geom_pos[self._mark, 1] - physics.data.qpos[self._adr])

    def success(self, physics: Physics) -> bool:
        return abs(self._error(physics)) < SUCCESS_DIST

    def dense_reward(self, physics: Physics) -> float:
        start = self.privileged_state(physics)["push_start"]
        reach = 0.3 * tolerance(float(np.linalg.norm(physics.ee_pos() - start)), 0.05)
        return reach + 0.69 * float(np.clip(1.0 - abs(self._error(physics)) / 0.12, 0.0, 1.0))

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        """Block and target, and where the paddle starts and stops pushing."""
        block = physics.data.xpos[self._block_body].copy()
        error = self._error(physics)
        side = np.sign(error) if error != 0 else 1.0
        offset = np.array([0.0, side * (BLOCK_HALF_Y + FINGER_HALF), 0.0])
        target = block + [0.0, error, 0.0]
        return {
            "block": block,
            "target": target,
            "push_start": block - offset - [0.0, side * 0.015, 0.0],
            "push_end": target - offset,
            "error": np.array(error),
        }

    def make_expert(self) -> Expert:
        return Expert(
            [
                Phase(above("push_start", BLOCK_Z + 0.10), CLOSED, tol=0.008),
                Phase(at("push_start"), CLOSED, tol=0.006, max_speed=0.6),
                Phase(at("push_end"), CLOSED, max_speed=0.5,
                      until=lambda p: bool(abs(p["error"]) < 0.004)),
                Phase(above("push_end", BLOCK_Z + 0.10), CLOSED),
            ]
        )
