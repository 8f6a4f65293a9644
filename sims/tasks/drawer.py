"""Drawer family: open or close a drawer in a small cabinet by its handle.

The cabinet is a mocap body (static, but placed per episode) whose drawer slides along the
world x axis toward the robot. The handle is a bar on two posts with room behind it for the
closed fingers, so the expert hooks it to pull (open) and pushes it to close.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sims.experts import CLOSED, Expert, Phase, above, at
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder
from sims.task import EpisodeOptions, Task, place_mocap, tolerance

CABINET_X = 0.70  # cabinet centre; its front face is 8 cm closer to the robot
HANDLE_OFFSET = 0.135  # handle bar, in front of the cabinet centre (closed drawer)
HANDLE_Z = 0.05
TRAVEL = 0.14  # drawer slide range (m)
OPEN_ENOUGH = 0.10
CLOSED_ENOUGH = 0.02


class DrawerTask(Task):
    """Shared scene and state of both drawer tasks; subclasses set the goal and start."""

    family = "drawer"
    max_episode_steps = 100

    def build(self, scene: SceneBuilder) -> None:
        frame = "".join(
            f'<geom name="cab_{n}" type="box" pos="{p}" size="{s}" rgba="0.75 0.75 0.72 1"/>'
            for n, p, s in [
                ("top", "0 0 0.095", "0.08 0.10 0.005"),
                ("bottom", "0 0 0.005", "0.08 0.10 0.005"),
                ("left", "0 0.095 0.05", "0.08 0.005 0.04"),
                ("right", "0 -0.095 0.05", "0.08 0.005 0.04"),
                ("back", "0.075 0 0.05", "0.005 0.09 0.04"),
            ]
        )
        scene.add_body(
            f"""
    <body name="cabinet" mocap="true" pos="{CABINET_X} 0 0">{frame}
      <body name="drawer" pos="0 0 0.05">
        <joint name="drawer" type="slide" axis="-1 0 0" range="0 {TRAVEL}" damping="8"
               limited="true"/>
        <geom name="drawer_front" type="box" pos="-0.075 0 0" size="0.005 0.088 0.038"/>
        <geom type="box" pos="0 0 -0.036" size="0.07 0.085 0.004" rgba="0.5 0.5 0.5 1"/>
        <geom type="box" pos="0.065 0 -0.01" size="0.004 0.085 0.026" rgba="0.5 0.5 0.5 1"/>
        <geom type="capsule" fromto="-0.08 0.05 0 -0.135 0.05 0" size="0.006"
              rgba="0.2 0.2 0.2 1"/>
        <geom type="capsule" fromto="-0.08 -0.05 0 -0.135 -0.05 0" size="0.006"
              rgba="0.2 0.2 0.2 1"/>
        <geom name="handle" type="capsule" fromto="-0.135 -0.055 0 -0.135 0.055 0"
              size="0.008" rgba="0.2 0.2 0.2 1"/>
      </body>
    </body>"""
        )

    def bind(self, physics: Physics) -> None:
        self._cabinet = physics.body_id("cabinet")
        self._drawer_adr = physics.joint_qpos_adr("drawer")
        self._front = physics.geom_id("drawer_front")
        self._handle = physics.geom_id("handle")

    def opening(self, physics: Physics) -> float:
        return float(physics.data.qpos[self._drawer_adr])

    def place_cabinet(self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions,
                      opening: float) -> dict[str, str]:
        place_mocap(physics, self._cabinet, np.array([CABINET_X, rng.uniform(-0.15, 0.15), 0.0]))
        physics.data.qpos[self._drawer_adr] = opening
        (name, rgba), = self.colors(rng, 1, options)
        physics.model.geom_rgba[self._front] = rgba
        return {"color": name}

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        """Handle position, plus hook (behind the bar) and push (in front of it) points."""
        handle = physics.data.geom_xpos[self._handle].copy()
        return {
            "handle": handle,
            "hook": handle + [0.03, 0.0, 0.0],
            "push": handle - [0.03, 0.0, 0.0],
            "opening": np.array(self.opening(physics)),
        }


@register_task("open_drawer")
class OpenDrawer(DrawerTask):
    """Pull the drawer open by at least 10 cm."""

    templates = (
        "open the {color} drawer",
        "pull the {color} drawer open",
        "slide the {color} drawer out",
    )
    heldout_templates = (
        "draw out the {color} drawer by its handle",
        "get the {color} drawer to open up",
    )

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        return self.place_cabinet(physics, rng, options, rng.uniform(0.0, 0.02))

    def success(self, physics: Physics) -> bool:
        return self.opening(physics) > OPEN_ENOUGH

    def dense_reward(self, physics: Physics) -> float:
        hook = self.privileged_state(physics)["hook"]
        reach = 0.3 * tolerance(float(np.linalg.norm(physics.ee_pos() - hook)), 0.05)
        return reach + 0.69 * float(np.clip(self.opening(physics) / OPEN_ENOUGH, 0.0, 1.0))

    def make_expert(self) -> Expert:
        return Expert(
            [
                Phase(above("hook", HANDLE_Z + 0.10), CLOSED, tol=0.008),
                Phase(at("hook"), CLOSED, tol=0.006, max_speed=0.6),
                Phase(_shifted("hook", -0.05), CLOSED,
                      max_speed=0.6, until=lambda p: bool(p["opening"] > OPEN_ENOUGH + 0.02)),
                Phase(above("hook", HANDLE_Z + 0.10), CLOSED),
            ]
        )


@register_task("close_drawer")
class CloseDrawer(DrawerTask):
    """Push an open drawer shut (within 2 cm)."""

    templates = (
        "close the {color} drawer",
        "push the {color} drawer shut",
        "slide the {color} drawer closed",
    )
    heldout_templates = (
        "shut the {color} drawer all the way",
        "tuck the {color} drawer back into the cabinet",
    )

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        return self.place_cabinet(physics, rng, options, rng.uniform(0.09, 0.13))

    def success(self, physics: Physics) -> bool:
        return self.opening(physics) < CLOSED_ENOUGH

    def dense_reward(self, physics: Physics) -> float:
        push = self.privileged_state(physics)["push"]
        reach = 0.3 * tolerance(float(np.linalg.norm(physics.ee_pos() - push)), 0.05)
        closed = 1.0 - (self.opening(physics) - CLOSED_ENOUGH) / (TRAVEL - CLOSED_ENOUGH)
        return reach + 0.69 * float(np.clip(closed, 0.0, 1.0))

    def make_expert(self) -> Expert:
        return Expert(
            [
                Phase(above("push", HANDLE_Z + 0.10), CLOSED, tol=0.008),
                Phase(at("push"), CLOSED, tol=0.006, max_speed=0.6),
                Phase(_shifted("push", 0.05), CLOSED, max_speed=0.6,
                      until=lambda p: bool(p["opening"] < 0.005)),
                Phase(above("push", HANDLE_Z + 0.10), CLOSED),
            ]
        )


def _shifted(key: str, dx: float) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Target function: the privileged position ``key`` moved ``dx`` along world x."""

    def target(priv: dict[str, np.ndarray]) -> np.ndarray:
        return priv[key] + [dx, 0.0, 0.0]

    return target
