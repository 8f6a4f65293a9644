"""Pick-and-place families: place a cube on a pad, stack two cubes, drop a cube into a bin.

All three share one shape: grasp a cube, carry it over a goal, lower it, release it. They
differ in the goal (a flat pad, the top of another cube, the inside of a bin) and so in the
release height and the success test.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from sims.experts import CLOSED, OPEN, Expert, Phase, above, at, pick_phases, square_yaw
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder
from sims.task import EpisodeOptions, Task, cube_xml, marker_xml, place_mocap, sample_xy, tolerance
from sims.tasks.pick import PICK_HIGH, PICK_LOW, CubeObject

CUBE_HALF = 0.02
CARRY_HEIGHT = 0.14


class PickAndPlace(Task):
    """Grasp ``cube`` and release it at :meth:`goal`, ``release_dz`` above the goal point."""

    max_episode_steps = 120
    displaceable = ("cube",)
    release_dz = CUBE_HALF + 0.004

    @abstractmethod
    def goal(self, physics: Physics) -> np.ndarray:
        """World point the cube's bottom centre should end up at."""

    @abstractmethod
    def placed(self, physics: Physics) -> bool:
        """The cube rests where it should (independent of whether it is still held)."""

    def success(self, physics: Physics) -> bool:
        return self.placed(physics) and not self.cube.grasped()

    def dense_reward(self, physics: Physics) -> float:
        """Staged: reach (0.2), grasp (0.2), carry toward the goal (0.4), placed (0.15)."""
        cube = self.cube.pos()
        reach = 0.2 * tolerance(float(np.linalg.norm(physics.ee_pos() - cube)), 0.05)
        if self.placed(physics):
            return 0.8 + 0.15
        if not self.cube.grasped():
            return reach
        carry = tolerance(float(np.linalg.norm(cube - (self.goal(physics) + [0, 0, CUBE_HALF]))), 0.1)
        return 0.4 + 0.4 * carry

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        return {
            "cube": self.cube.pos().copy(),
            "cube_yaw": np.array(self.cube.yaw()),
            "goal": self.goal(physics).copy(),
            "grasped": np.array(self.cube.grasped()),
        }

    def make_expert(self) -> Expert:
        yaw = lambda p: square_yaw(float(p["cube_yaw"]))
        dropped = lambda p: not bool(p["grasped"])
        return Expert(
            pick_phases("cube", "cube_yaw", CUBE_HALF, CARRY_HEIGHT)
            + [
                Phase(above("goal", CARRY_HEIGHT), CLOSED, yaw, tol=0.012, restart_if=dropped),
                Phase(at("goal", self.release_dz), CLOSED, yaw, tol=0.006, max_speed=0.6,
                      restart_if=dropped),
                Phase(at("goal", self.release_dz), OPEN, yaw, min_steps=3, until=lambda p: True),
                Phase(at("goal", 0.12), OPEN, yaw, tol=0.01),
            ]
        )


@register_task("place_cube")
class PlaceCube(PickAndPlace):
    """Put the cube on a coloured target pad."""

    family = "place"
    templates = (
        "place the {color} cube on the {pad} pad",
        "put the {color} block onto the {pad} target",
        "move the {color} cube to the {pad} circle",
    )
    heldout_templates = (
        "set the {color} box down on the {pad} disc",
        "relocate the {color} brick onto the {pad} spot",
    )
    PAD_RADIUS = 0.045

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(cube_xml("cube", CUBE_HALF))
        scene.add_body(marker_xml("pad", self.PAD_RADIUS))

    def bind(self, physics: Physics) -> None:
        self.cube = CubeObject(physics, "cube")
        self._pad = physics.body_id("pad")
        self._pad_geom = physics.geom_id("pad")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        xy = rng.uniform(PICK_LOW, PICK_HIGH)
        self.cube.place(xy, CUBE_HALF, rng.uniform(-np.pi, np.pi))
        pad = sample_xy(rng, PICK_LOW, PICK_HIGH, [xy], 0.12)
        place_mocap(physics, self._pad, np.array([pad[0], pad[1], 0.002]))
        (name, rgba), (pad_name, pad_rgba) = self.colors(rng, 2, options)
        self.cube.paint(rgba)
        physics.model.geom_rgba[self._pad_geom] = [*pad_rgba[:3], 0.8]
        return {"color": name, "pad": pad_name}

    def goal(self, physics: Physics) -> np.ndarray:
        mocap = physics.model.body_mocapid[self._pad]
        return physics.data.mocap_pos[mocap] - [0.0, 0.0, 0.002]

    def placed(self, physics: Physics) -> bool:
        cube, goal = self.cube.pos(), self.goal(physics)
        return bool(np.linalg.norm(cube[:2] - goal[:2]) < 0.03 and cube[2] < CUBE_HALF + 0.005)


@register_task("stack_cube")
class StackCube(PickAndPlace):
    """Put one cube on top of another."""

    family = "stack"
    templates = (
        "stack the {color} cube on the {base} cube",
        "put the {color} block on top of the {base} block",
        "place the {color} cube onto the {base} one",
    )
    heldout_templates = (
        "build a tower with the {color} box above the {base} box",
        "rest the {color} brick on the {base} brick",
    )
    BASE_HALF = 0.025

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(cube_xml("cube", CUBE_HALF))
        scene.add_body(cube_xml("base", self.BASE_HALF, mass=0.3))

    def bind(self, physics: Physics) -> None:
        self.cube = CubeObject(physics, "cube")
        self.base = CubeObject(physics, "base")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        xy = rng.uniform(PICK_LOW, PICK_HIGH)
        self.cube.place(xy, CUBE_HALF, rng.uniform(-np.pi, np.pi))
        base = sample_xy(rng, PICK_LOW, PICK_HIGH, [xy], 0.12)
        self.base.place(base, self.BASE_HALF, rng.uniform(-np.pi, np.pi))
        (name, rgba), (base_name, base_rgba) = self.colors(rng, 2, options)
        self.cube.paint(rgba)
        self.base.paint(base_rgba)
        return {"color": name, "base": base_name}

    def goal(self, physics: Physics) -> np.ndarray:
        return self.base.pos() + [0.0, 0.0, self.BASE_HALF]

    def placed(self, physics: Physics) -> bool:
        cube, goal = self.cube.pos(), self.goal(physics)
        return bool(
            np.linalg.norm(cube[:2] - goal[:2]) < 0.02 and abs(cube[2] - goal[2] - CUBE_HALF) < 0.008
        )


@register_task("put_in_bin")
class PutInBin(PickAndPlace):
    """Drop the cube into an open-topped bin."""

    family = "bin"
    templates = (
        "put the {color} cube in the bin",
        "drop the {color} block into the {bin} box",
        "place the {color} cube inside the {bin} container",
    )
    heldout_templates = (
        "toss the {color} brick into the {bin} tray",
        "deposit the {color} box in the receptacle",
    )
    INNER = 0.065  # half width of the bin's inside (m)
    WALL = 0.05  # wall height (m)
    release_dz = 0.09

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(cube_xml("cube", CUBE_HALF))
        w, h, t = self.INNER, self.WALL, 0.005
        walls = "".join(
            f'<geom name="bin_{i}" type="box" pos="{x} {y} {h / 2}" size="{sx} {sy} {h / 2}"/>'
            for i, (x, y, sx, sy) in enumerate(
                [(w + t, 0, t, w + 2 * t), (-w - t, 0, t, w + 2 * t), (0, w + t, w, t), (0, -w - t, w, t)]
            )
        )
        scene.add_body(
            f'<body name="bin" mocap="true" pos="0.5 0 0">'
            f'<geom name="bin_floor" type="box" pos="0 0 {t / 2}" size="{w} {w} {t / 2}"/>{walls}</body>'
        )

    def bind(self, physics: Physics) -> None:
        self.cube = CubeObject(physics, "cube")
        self._bin = physics.body_id("bin")
        self._bin_geoms = [physics.geom_id(f"bin_{i}") for i in range(4)] + [physics.geom_id("bin_floor")]

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        xy = rng.uniform(PICK_LOW, PICK_HIGH)
        self.cube.place(xy, CUBE_HALF, rng.uniform(-np.pi, np.pi))
        bin_xy = sample_xy(rng, PICK_LOW, PICK_HIGH, [xy], 0.14)
        place_mocap(physics, self._bin, np.array([bin_xy[0], bin_xy[1], 0.0]))
        (name, rgba), (bin_name, bin_rgba) = self.colors(rng, 2, options)
        self.cube.paint(rgba)
        physics.model.geom_rgba[self._bin_geoms] = bin_rgba
        return {"color": name, "bin": bin_name}

    def goal(self, physics: Physics) -> np.ndarray:
        return physics.data.mocap_pos[physics.model.body_mocapid[self._bin]].copy()

    def placed(self, physics: Physics) -> bool:
        offset = self.cube.pos() - self.goal(physics)
        return bool(np.all(np.abs(offset[:2]) < self.INNER) and offset[2] < self.WALL)
