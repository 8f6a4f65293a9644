"""Pick family: lift a cube, or lift the cube of the named colour among two."""

from __future__ import annotations

import numpy as np

from sims.experts import Expert, pick_phases
from sims.registry import register_task
from sims.scene import Physics, SceneBuilder, quat_yaw
from sims.task import EpisodeOptions, Task, cube_xml, sample_xy, tolerance

CUBE_HALF = 0.02
LIFT_HEIGHT = 0.10  # cube centre height (m above the table) that counts as lifted
PICK_LOW, PICK_HIGH = (0.35, -0.20), (0.60, 0.20)


class CubeObject:
    """A free cube bound to a physics handle: pose accessors and the grasp test."""

    def __init__(self, physics: Physics, name: str) -> None:
        self.physics = physics
        self.name = name
        self.adr = physics.joint_qpos_adr(f"{name}_joint")
        self.geom = physics.geom_id(name)

    def pos(self) -> np.ndarray:
        return self.physics.data.qpos[self.adr : self.adr + 3]

    def yaw(self) -> float:
        return quat_yaw(self.physics.data.qpos[self.adr + 3 : self.adr + 7])

    def place(self, xy: np.ndarray, half: float, yaw: float) -> None:
        self.physics.set_free_pose(self.adr, np.array([xy[0], xy[1], half]), yaw)

    def grasped(self) -> bool:
        return self.physics.grasped(self.geom)

    def paint(self, rgba: np.ndarray) -> None:
        self.physics.model.geom_rgba[self.geom] = rgba


def lift_reward(physics: Physics, cube: CubeObject, half: float) -> float:
    """Staged: reach the cube (0.3), grasp it (0.2), raise it toward the lift height (0.5)."""
    reach = 0.3 * tolerance(float(np.linalg.norm(physics.ee_pos() - cube.pos())), 0.05)
    if not cube.grasped():
        return reach
    height = np.clip((cube.pos()[2] - half) / (LIFT_HEIGHT - half), 0.0, 1.0)
    return 0.3 + 0.2 + 0.5 * float(height) * 0.99


@register_task("lift_cube")
class LiftCube(Task):
    """Grasp the only cube on the table and lift it 10 cm."""

    family = "pick"
    templates = (
        "pick up the {color} cube",
        "lift the {color} block off the table",
        "grab the {color} cube and raise it",
    )
    heldout_templates = (
        "hoist the {color} box into the air",
        "take hold of the {color} brick and elevate it",
    )
    max_episode_steps = 80
    displaceable = ("cube",)

    def build(self, scene: SceneBuilder) -> None:
        scene.add_body(cube_xml("cube", CUBE_HALF))

    def bind(self, physics: Physics) -> None:
        self.cube = CubeObject(physics, "cube")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        self.cube.place(rng.uniform(PICK_LOW, PICK_HIGH), CUBE_HALF, rng.uniform(-np.pi, np.pi))
        (name, rgba), = self.colors(rng, 1, options)
        self.cube.paint(rgba)
        return {"color": name}

    def success(self, physics: Physics) -> bool:
        return bool(self.cube.pos()[2] > LIFT_HEIGHT and self.cube.grasped())

    def dense_reward(self, physics: Physics) -> float:
        return lift_reward(physics, self.cube, CUBE_HALF)

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        return {
            "cube": self.cube.pos().copy(),
            "cube_yaw": np.array(self.cube.yaw()),
            "grasped": np.array(self.cube.grasped()),
        }

    def make_expert(self) -> Expert:
        return Expert(pick_phases("cube", "cube_yaw", CUBE_HALF, LIFT_HEIGHT + 0.06))


@register_task("pick_cube")
class PickCube(LiftCube):
    """Two cubes of different colours; lift the one the instruction names.

    The same lift as :class:`LiftCube` (success, reward, expert) with a distractor cube, so the
    instruction decides which cube is right.
    """

    templates = (
        "pick up the {color} cube",
        "lift the {color} cube, not the {other} one",
        "grasp the {color} block and lift it",
    )
    heldout_templates = (
        "of the two blocks, raise the {color} one",
        "elevate the {color} box and leave the {other} box alone",
    )
    displaceable = ("cube", "other")

    def build(self, scene: SceneBuilder) -> None:
        super().build(scene)
        scene.add_body(cube_xml("other", CUBE_HALF))

    def bind(self, physics: Physics) -> None:
        super().bind(physics)
        self.other = CubeObject(physics, "other")

    def initialize_episode(
        self, physics: Physics, rng: np.random.Generator, options: EpisodeOptions
    ) -> dict[str, str]:
        xy = rng.uniform(PICK_LOW, PICK_HIGH)
        self.cube.place(xy, CUBE_HALF, rng.uniform(-np.pi, np.pi))
        self.other.place(sample_xy(rng, PICK_LOW, PICK_HIGH, [xy], 0.10), CUBE_HALF,
                         rng.uniform(-np.pi, np.pi))
        (name, rgba), (other_name, other_rgba) = self.colors(rng, 2, options)
        self.cube.paint(rgba)
        self.other.paint(other_rgba)
        return {"color": name, "other": other_name}

    def privileged_state(self, physics: Physics) -> dict[str, np.ndarray]:
        return {**super().privileged_state(physics), "other": self.other.pos().copy()}
