"""Perturbation levels along RL4VLA's generalization axes, selectable by name.

- ``visual``: table and floor repainted outside the training look, lighting changed, visual-only
  distractor objects shown. Physics is untouched (distractors have no collisions).
- ``semantic``: held-out instruction paraphrases and held-out object colours (a colour/object
  combination never seen in training, named in the instruction).
- ``execution``: a large random initial arm pose offset, and the task's main object displaced
  a few centimetres early in the episode (when it is not held).
- ``dynamics``: friction, object mass and joint damping scaled by random factors.

``"none"`` is the training distribution; levels combine with commas (``"visual,dynamics"``).
The model is compiled once; every level writes into the compiled model at reset and
:meth:`PerturbationApplier.restore` puts nominal values back first, so levels never leak
between episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sims.palette import SCENE_COLORS
from sims.scene import Physics, SceneBuilder

LEVELS = ("visual", "semantic", "execution", "dynamics")
N_DISTRACTORS = 3
NOMINAL_JOINT_NOISE = 0.02  # radians of initial arm pose jitter in every episode
EXECUTION_JOINT_NOISE = 0.15  # radians under the execution perturbation
EXECUTION_DISPLACE_STEPS = (3, 8)  # control step range of the mid-episode displacement
EXECUTION_DISPLACE_DIST = (0.03, 0.05)  # metres
FRICTION_SCALE = (0.5, 1.5)
MASS_SCALE = (0.5, 2.0)
DAMPING_SCALE = (0.5, 2.0)


def parse_perturbation(spec: str) -> frozenset[str]:
    """Parse ``"none"`` or a comma-separated list of level names into a set of levels."""
    names = {s.strip() for s in spec.split(",") if s.strip()}
    names.discard("none")
    unknown = sorted(names - set(LEVELS))
    if unknown:
        from vla_rft.errors import UserInputError

        raise UserInputError(
            f"unknown perturbation {unknown}; choose 'none' or a comma-separated subset of {LEVELS}"
        )
    return frozenset(names)


def add_distractors(scene: SceneBuilder) -> None:
    """Visual-only mocap distractors, present in every model (so the compiled model and its
    physics do not depend on the perturbation level) and hidden unless ``visual`` is on."""
    shapes = ('type="box" size="0.025 0.025 0.025"', 'type="cylinder" size="0.02 0.03"',
              'type="sphere" size="0.025"')
    for i, shape in enumerate(shapes[:N_DISTRACTORS]):
        scene.add_body(
            f'<body name="distractor{i}" mocap="true" pos="0 0 -1">'
            f'<geom name="distractor{i}" {shape} contype="0" conaffinity="0" rgba="0 0 0 0"/>'
            f"</body>"
        )


@dataclass
class PerturbationApplier:
    """Applies the selected levels to a compiled scene and restores nominal values."""

    physics: Physics
    levels: frozenset[str]
    object_bodies: list[int] = field(default_factory=list)  # bodies whose mass dynamics scales
    params: dict[str, float] = field(default_factory=dict)  # this episode's sampled values

    def __post_init__(self) -> None:
        m = self.physics.model
        self._nominal = {
            "geom_rgba": m.geom_rgba.copy(),
            "geom_friction": m.geom_friction.copy(),
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "dof_damping": m.dof_damping.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "light_dir": m.light_dir.copy(),
            "headlight_ambient": m.vis.headlight.ambient.copy(),
        }
        self._table = self.physics.geom_id("table")
        self._floor = self.physics.geom_id("floor")
        self._distractors = [self.physics.body_id(f"distractor{i}") for i in range(N_DISTRACTORS)]
        self._distractor_geoms = [self.physics.geom_id(f"distractor{i}") for i in range(N_DISTRACTORS)]

    def restore(self) -> None:
        """Put every field a level may touch back to its compiled value."""
        m = self.physics.model
        for name in ("geom_rgba", "geom_friction", "body_mass", "body_inertia", "dof_damping",
                     "light_diffuse", "light_dir"):
            getattr(m, name)[:] = self._nominal[name]
        m.vis.headlight.ambient[:] = self._nominal["headlight_ambient"]
        self.params = {}

    def arm_joint_noise(self) -> float:
        return EXECUTION_JOINT_NOISE if "execution" in self.levels else NOMINAL_JOINT_NOISE

    def apply_at_reset(self, rng: np.random.Generator, occupied: list[np.ndarray]) -> None:
        """Apply visual and dynamics levels (after the task placed its objects)."""
        if "visual" in self.levels:
            self._visual(rng, occupied)
        if "dynamics" in self.levels:
            self._dynamics(rng)

    def displace_step(self, rng: np.random.Generator) -> int:
        """Control step at which the execution level displaces an object (-1: never)."""
        if "execution" not in self.levels:
            return -1
        return int(rng.integers(*EXECUTION_DISPLACE_STEPS, endpoint=True))

    def displacement(self, rng: np.random.Generator) -> np.ndarray:
        """A random xy offset of the execution level's size."""
        angle = rng.uniform(-np.pi, np.pi)
        return rng.uniform(*EXECUTION_DISPLACE_DIST) * np.array([np.cos(angle), np.sin(angle)])

    def _visual(self, rng: np.random.Generator, occupied: list[np.ndarray]) -> None:
        m, d = self.physics.model, self.physics.data
        table, floor = rng.choice(len(SCENE_COLORS), size=2, replace=False)
        m.geom_rgba[self._table, :3] = SCENE_COLORS[table]
        m.geom_rgba[self._floor, :3] = SCENE_COLORS[floor]
        light = rng.uniform(0.3, 1.3)
        m.light_diffuse[:] = self._nominal["light_diffuse"] * light
        tilt = rng.uniform(-0.5, 0.5, size=2)
        m.light_dir[:] = np.array([tilt[0], tilt[1], -1.0]) / np.linalg.norm([*tilt, 1.0])
        m.vis.headlight.ambient[:] = rng.uniform(0.15, 0.55)
        self.params.update(light_scale=light, table_color=float(table))
        for body, geom in zip(self._distractors, self._distractor_geoms, strict=True):
            xy = _free_spot(rng, occupied)
            occupied.append(np.array([*xy, 0.0]))
            d.mocap_pos[m.body_mocapid[body]] = [xy[0], xy[1], 0.03]
            m.geom_rgba[geom] = [*rng.uniform(0.05, 0.95, size=3), 1.0]

    def _dynamics(self, rng: np.random.Generator) -> None:
        m = self.physics.model
        friction = rng.uniform(*FRICTION_SCALE)
        mass = rng.uniform(*MASS_SCALE)
        damping = rng.uniform(*DAMPING_SCALE)
        m.geom_friction[:, 0] = self._nominal["geom_friction"][:, 0] * friction
        for body in self.object_bodies:
            m.body_mass[body] = self._nominal["body_mass"][body] * mass
            m.body_inertia[body] = self._nominal["body_inertia"][body] * mass
        m.dof_damping[:] = self._nominal["dof_damping"] * damping
        self.params.update(friction_scale=friction, mass_scale=mass, damping_scale=damping)


def _free_spot(rng: np.random.Generator, occupied: list[np.ndarray]) -> np.ndarray:
    """A table spot in the camera's view at least 10 cm from every occupied point."""
    for _ in range(200):
        xy = rng.uniform([0.25, -0.35], [0.75, 0.35])
        if all(np.linalg.norm(xy - o[:2]) > 0.10 for o in occupied):
            return xy
    return rng.uniform([0.25, -0.35], [0.75, 0.35])
