"""Button family: press the button of the named colour (two spring-loaded buttons)."""

from __future__ import annotations

import numpy as np

from sims.experts import CLOSED, Expert, Phase, above, at
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder
from sims.task import EpisodeOptions, Task, place_mocap, sample_xy, tolerance

PRESSED = -0.008  # cap travel (m, negative = down) that counts as a press
CAP_TOP = 0.05  # cap top height at rest


def _button_xml(name: str) -> str:
    return f"""
    <body name="{name}_base" mocap="true" pos="0.5 0 0">
      <geom type="box" pos="0 0 0.015" size="0.04 0.04 0.015" rgba="0.25 0.25 0.28 1"/>
      <body name="{name}" pos="0 0 0.04">
        <joint name="{name}" type="slide" axis="0 0 1" range="-0.015 0" stiffness="300"
               damping="2" limited="true"/>
        <geom name="{name}" type="cylinder" size="0.026 0.01" rgba="1 1 1 1" mass="0.02"/>
      </body>
    </body>"""


@register_task("press_button")
class PressButton(Task):
    """Press the named button down by at least 8 mm."""

    family = "button"
    templates = (
        "press the {color} button",
        "push down the {color} button, not the {other} one",
        "hit the {color} button",
    )
    heldout_templates = (
        "depress the {color} switch",
        "give the {color} push-button a press",
    )
    max_episode_steps = 60
    displaceable = ()

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(_button_xml("button"))
        scene.add_body(_button_xml("other"))

    def bind(self, physics: Physics) -> None:
        self._bases = (physics.body_id("button_base"), physics.body_id("other_base"))
        self._adr = physics.joint_qpos_adr("button")
        self._cap = physics.body_id("button")
        self._geoms = (physics.geom_id("button"), physics.geom_id("other"))

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        low, high = (0.38, -0.2), (0.6, 0.2)
        first = rng.uniform(low, high)
        second = sample_xy(rng, low, high, [first], 0.15)
        for body, xy in zip(self._bases, (first, second), strict=True):
            place_mocap(physics, body, np.array([xy[0], xy[1], 0.0]))
        (name, rgba), (other, other_rgba) = self.colors(rng, 2, options)
        physics.model.geom_rgba[self._geoms[0]] = rgba
        physics.model.geom_rgba[self._geoms[1]] = other_rgba
        return {"color": name, "other": other}

    def depth(self, physics: Physics) -> float:
        return float(physics.data.qpos[self._adr])

    def success(self, physics: Physics) -> bool:
        return self.depth(physics) < PRESSED

    def dense_reward(self, physics: Physics) -> float:
        top = physics.data.xpos[self._cap] + [0.0, 0.0, 0.01]
        reach = 0.4 * tolerance(float(np.linalg.norm(physics.ee_pos() - top)), 0.05)
        return reach + 0.59 * float(np.clip(self.depth(physics) / PRESSED, 0.0, 1.0))

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        top = physics.data.xpos[self._cap] + [0.0, 0.0, 0.01]
        other = physics.data.mocap_pos[physics.model.body_mocapid[self._bases[1]]].copy()
        return {"button": top, "other": other, "depth": np.array(self.depth(physics))}

    def make_expert(self) -> Expert:
        return Expert(
            [
                Phase(above("button", CAP_TOP + 0.10), CLOSED, tol=0.008),
                Phase(above("button", CAP_TOP, dz=-0.02), CLOSED, max_speed=0.6,
                      until=lambda p: bool(p["depth"] < PRESSED - 0.002)),
                Phase(at("button", 0.10), CLOSED),
            ]
        )
