"""Scene assembly (MJCF from string templates) and the ``Physics`` handle tasks talk to.

Physics and scene are kept apart from task logic (dm_control style): a task only adds bodies
to a :class:`SceneBuilder` and reads/writes state through :class:`Physics` by name, so the same
task definitions can later drive another backend that offers the same small interface.
The model is compiled once per environment; per-episode randomization (poses, colours,
friction, mass) writes into the compiled model and data instead of recompiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from sims.arm import (
    ARM_ASSETS,
    ARM_DEFAULTS,
    ARM_TENDON_EQUALITY_ACTUATORS,
    FINGER_TRAVEL,
    ArmIndices,
    arm_body_xml,
)

TIMESTEP = 0.002
SUBSTEPS = 50  # 50 x 2 ms = 100 ms per control step (10 Hz)
TABLE_COLOR = (0.55, 0.45, 0.35, 1.0)
FRONT_CAMERA_POS = np.array([1.25, 0.0, 0.65])
FRONT_CAMERA_TARGET = np.array([0.45, 0.0, 0.02])
CAMERAS = ("front", "wrist")


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> str:
    """MJCF ``xyaxes`` for a camera at ``pos`` looking at ``target`` with world z up."""
    fwd = target - pos
    fwd /= np.linalg.norm(fwd)
    x_axis = np.cross(fwd, [0.0, 0.0, 1.0])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(x_axis, fwd)
    return " ".join(f"{v:.5f}" for v in (*x_axis, *y_axis))


@dataclass
class SceneBuilder:
    """Collects the MJCF fragments that tasks and perturbations add to the base scene."""

    image_size: int = 64
    assets: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)  # top-level sections (equality, ...)

    def add_body(self, xml: str) -> None:
        """Add a ``<body>`` (or static ``<geom>``) under ``<worldbody>``."""
        self.bodies.append(xml)

    def add_asset(self, xml: str) -> None:
        self.assets.append(xml)

    def to_xml(self) -> str:
        size = max(self.image_size, 64)
        return f"""
<mujoco model="vla_rft_scene">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <map haze="0"/>
  </visual>
  <asset>
    {ARM_ASSETS}
    {''.join(self.assets)}
  </asset>
  <default>
    <geom solref="0.01 1"/>
    {ARM_DEFAULTS}
  </default>
  <worldbody>
    <light name="top" pos="0.4 0 1.5" dir="0 0 -1" diffuse="0.6 0.6 0.6" directional="true"
           castshadow="false"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.75" rgba="0.3 0.32 0.35 1"/>
    <geom name="table" type="box" size="0.55 0.6 0.02" pos="0.35 0 -0.02"
          rgba="{' '.join(map(str, TABLE_COLOR))}"/>
    <camera name="front" pos="{' '.join(map(str, FRONT_CAMERA_POS))}"
            xyaxes="{look_at_xyaxes(FRONT_CAMERA_POS.copy(), FRONT_CAMERA_TARGET)}" fovy="50"/>
    {arm_body_xml()}
    {''.join(self.bodies)}
  </worldbody>
  {ARM_TENDON_EQUALITY_ACTUATORS}
  {''.join(self.extras)}
</mujoco>
"""


class Physics:
    """A compiled model + data, with name lookups cached and the helpers tasks need."""

    def __init__(self, xml: str) -> None:
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.arm = ArmIndices.from_model(self.model)
        self._quat = np.zeros(4)
        self._fingers = (self.geom_id("finger_l"), self.geom_id("finger_r"))

    # -- name lookups (call once when binding a task, not per step) --
    def body_id(self, name: str) -> int:
        return self._id(mujoco.mjtObj.mjOBJ_BODY, name)

    def geom_id(self, name: str) -> int:
        return self._id(mujoco.mjtObj.mjOBJ_GEOM, name)

    def site_id(self, name: str) -> int:
        return self._id(mujoco.mjtObj.mjOBJ_SITE, name)

    def camera_id(self, name: str) -> int:
        return self._id(mujoco.mjtObj.mjOBJ_CAMERA, name)

    def joint_qpos_adr(self, name: str) -> int:
        return int(self.model.jnt_qposadr[self._id(mujoco.mjtObj.mjOBJ_JOINT, name)])

    def joint_dof_adr(self, name: str) -> int:
        return int(self.model.jnt_dofadr[self._id(mujoco.mjtObj.mjOBJ_JOINT, name)])

    def _id(self, kind: mujoco.mjtObj, name: str) -> int:
        i = mujoco.mj_name2id(self.model, kind, name)
        if i < 0:
            raise KeyError(f"no {kind.name[6:].lower()} named '{name}' in the scene")
        return i

    # -- state accessors --
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.arm.ee_site]

    def ee_quat(self) -> np.ndarray:
        mujoco.mju_mat2Quat(self._quat, self.data.site_xmat[self.arm.ee_site])
        return self._quat.copy()

    def gripper_closure(self) -> float:
        """Finger closure normalized to 0 (fully open) .. 1 (fully closed)."""
        return float(self.data.qpos[self.arm.finger_qpos].mean() / FINGER_TRAVEL)

    def set_free_pose(self, joint_qpos_adr: int, pos: np.ndarray, yaw: float) -> None:
        """Place a free-jointed body at ``pos`` rotated by ``yaw`` about world z."""
        self.data.qpos[joint_qpos_adr : joint_qpos_adr + 3] = pos
        self.data.qpos[joint_qpos_adr + 3 : joint_qpos_adr + 7] = yaw_quat(yaw)

    def refresh_kinematics(self) -> None:
        """Recompute positions, Jacobian inputs and camera poses after ``mj_step``.

        ``mj_step`` leaves kinematics one substep stale; these three stages are far cheaper
        than a full ``mj_forward`` and are all that observation, IK and rendering read.
        """
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def grasped(self, geom: int) -> bool:
        """True if both fingers touch ``geom`` (a two-sided grasp)."""
        return self.in_contact(self._fingers[0], geom) and self.in_contact(self._fingers[1], geom)

    def in_contact(self, geom_a: int, geom_b: int) -> bool:
        """True if the two geoms touch in the current contact list."""
        c = self.data.contact
        n = self.data.ncon
        g1 = c.geom1[:n]
        g2 = c.geom2[:n]
        return bool(np.any(((g1 == geom_a) & (g2 == geom_b)) | ((g1 == geom_b) & (g2 == geom_a))))


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion (wxyz) of a rotation by ``yaw`` radians about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(quat: np.ndarray) -> float:
    """Yaw (rotation about z) of a quaternion, assuming the body is upright."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
