"""The suite's own 6-DoF arm: MJCF fragment, joint layout and the end-effector IK controller.

The arm is a PUMA-like chain (base yaw, shoulder pitch, elbow pitch, then a roll-pitch-roll
spherical wrist) built from capsules so that collision and rendering stay cheap. A parallel
two-finger gripper has two slide joints coupled by an equality constraint and driven by one
position actuator on a fixed tendon, so the policy sees one gripper command.

The controller turns the contract's 7-dim action (see :mod:`vla_rft.contract`) into joint
position targets with one damped-least-squares step per control step: the Jacobian is computed
once, not per physics substep, which keeps the per-step Python cost small.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from vla_rft.contract import ACTION_POS_SCALE, ACTION_ROT_SCALE

ARM_JOINTS = ("j1", "j2", "j3", "j4", "j5", "j6")
FINGER_JOINTS = ("finger_l", "finger_r")
EE_SITE = "grip"
# Elbow-up pose with the gripper pointing straight down, 0.45 m in front of the base and
# 0.20 m above the table (solved in closed form for the link lengths below).
HOME_QPOS = np.array([0.0, 0.3954, 1.6280, 0.0, 1.1182, 0.0])
# Gripper pointing down (180 deg about world y): local z of the hand = world -z.
DOWN_QUAT = np.array([0.0, 0.0, 1.0, 0.0])
FINGER_TRAVEL = 0.04  # metres each finger moves from open (0) to closed (FINGER_TRAVEL)
# Box the end-effector target is kept in (world frame, metres): above the table, in reach.
WORKSPACE_LOW = np.array([0.18, -0.40, 0.005])
WORKSPACE_HIGH = np.array([0.80, 0.40, 0.50])

ARM_ASSETS = """
    <material name="arm_grey" rgba="0.62 0.64 0.68 1"/>
    <material name="arm_dark" rgba="0.18 0.19 0.22 1"/>
    <material name="finger" rgba="0.85 0.45 0.15 1"/>
"""

ARM_DEFAULTS = """
    <default class="arm">
      <joint damping="2" armature="0.05" limited="true"/>
      <position kp="600" dampratio="1"/>
      <geom material="arm_grey" contype="1" conaffinity="1" group="1"/>
      <default class="finger">
        <geom type="box" material="finger" friction="2 0.02 0.002" condim="4" priority="1"/>
        <joint type="slide" range="0 0.04" damping="15" armature="0.01"/>
      </default>
    </default>
"""

ARM_BODY = """
    <body name="arm_base" pos="0 0 0" childclass="arm">
      <geom type="cylinder" size="0.07 0.06" pos="0 0 0.06" material="arm_dark" contype="0"
            conaffinity="0"/>
      <body name="link1" pos="0 0 0.12" gravcomp="1">
        <joint name="j1" axis="0 0 1" range="-2.9 2.9"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.08" size="0.05"/>
        <body name="link2" pos="0 0 0.08" gravcomp="1">
          <joint name="j2" axis="0 1 0" range="-1.6 2.1"/>
          <geom type="capsule" fromto="0 0 0 0 0 0.35" size="0.04"/>
          <body name="link3" pos="0 0 0.35" gravcomp="1">
            <joint name="j3" axis="0 1 0" range="-0.3 2.8"/>
            <geom type="capsule" fromto="0 0 0 0 0 0.17" size="0.035"/>
            <body name="link4" pos="0 0 0.17" gravcomp="1">
              <joint name="j4" axis="0 0 1" range="-2.9 2.9"/>
              <geom type="capsule" fromto="0 0 0 0 0 0.18" size="0.03"/>
              <body name="link5" pos="0 0 0.18" gravcomp="1">
                <joint name="j5" axis="0 1 0" range="-2.2 2.2"/>
                <geom type="capsule" fromto="0 0 0 0 0 0.05" size="0.028" material="arm_dark"/>
                <body name="hand" pos="0 0 0.06" gravcomp="1">
                  <joint name="j6" axis="0 0 1" range="-2.9 2.9"/>
                  <geom type="box" size="0.02 0.055 0.015" pos="0 0 0.015" material="arm_dark"/>
                  <site name="grip" pos="0 0 0.105" size="0.006" rgba="1 0 0 0" group="3"/>
                  <camera name="wrist" pos="0.07 0 0.0" xyaxes="0 1 0 {wrist_x}"
                          fovy="80"/>
                  <body name="finger_l" pos="0 0.045 0.07" gravcomp="1" childclass="finger">
                    <joint name="finger_l" axis="0 -1 0"/>
                    <geom name="finger_l" size="0.012 0.007 0.04"/>
                  </body>
                  <body name="finger_r" pos="0 -0.045 0.07" gravcomp="1" childclass="finger">
                    <joint name="finger_r" axis="0 1 0"/>
                    <geom name="finger_r" size="0.012 0.007 0.04"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
"""

ARM_TENDON_EQUALITY_ACTUATORS = """
  <tendon>
    <fixed name="grip">
      <joint joint="finger_l" coef="0.5"/>
      <joint joint="finger_r" coef="0.5"/>
    </fixed>
  </tendon>
  <equality>
    <joint joint1="finger_l" joint2="finger_r" solref="0.005 1"/>
  </equality>
  <contact>
    <exclude body1="hand" body2="finger_l"/>
    <exclude body1="hand" body2="finger_r"/>
    <exclude body1="finger_l" body2="finger_r"/>
  </contact>
  <actuator>
    <position name="a1" joint="j1" class="arm" ctrlrange="-2.9 2.9"/>
    <position name="a2" joint="j2" class="arm" ctrlrange="-1.6 2.1"/>
    <position name="a3" joint="j3" class="arm" ctrlrange="-0.3 2.8"/>
    <position name="a4" joint="j4" class="arm" ctrlrange="-2.9 2.9" kp="300"/>
    <position name="a5" joint="j5" class="arm" ctrlrange="-2.2 2.2" kp="300"/>
    <position name="a6" joint="j6" class="arm" ctrlrange="-2.9 2.9" kp="200"/>
    <position name="gripper" tendon="grip" class="arm" ctrlrange="0 0.04" kp="300"/>
  </actuator>
"""


def _wrist_camera_y_axis() -> str:
    """Camera y axis (image up) in hand coordinates: tilted so the camera sees the pinch point.

    The camera sits 7 cm beside the hand and looks along the hand's +z (toward the fingers),
    tilted toward the fingertips; x (image right) is the hand's +y.
    """
    look = np.array([-0.07, 0.0, 0.16])
    look /= np.linalg.norm(look)
    x_axis = np.array([0.0, 1.0, 0.0])
    z_axis = -look  # a MuJoCo camera looks along its -z
    y_axis = np.cross(z_axis, x_axis)
    return " ".join(f"{v:.5f}" for v in y_axis)


def arm_body_xml() -> str:
    """The arm's ``<body>`` tree, with the wrist camera's orientation filled in."""
    return ARM_BODY.replace("{wrist_x}", _wrist_camera_y_axis())


@dataclass
class ArmIndices:
    """Addresses of the arm's joints, dofs, actuators and end-effector site in a compiled model."""

    qpos: np.ndarray  # (6,) qpos addresses of the arm joints
    dof: np.ndarray  # (6,) dof addresses of the arm joints
    finger_qpos: np.ndarray  # (2,) qpos addresses of the finger joints
    finger_dof: np.ndarray  # (2,)
    arm_act: np.ndarray  # (6,) actuator ids of the arm joints
    grip_act: int
    ee_site: int

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> ArmIndices:
        def jnt(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

        def act(name: str) -> int:
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, name)

        arm = [jnt(n) for n in ARM_JOINTS]
        fingers = [jnt(n) for n in FINGER_JOINTS]
        return cls(
            qpos=model.jnt_qposadr[arm].copy(),
            dof=model.jnt_dofadr[arm].copy(),
            finger_qpos=model.jnt_qposadr[fingers].copy(),
            finger_dof=model.jnt_dofadr[fingers].copy(),
            arm_act=np.array([act(f"a{i}") for i in range(1, 7)]),
            grip_act=act("gripper"),
            ee_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, EE_SITE),
        )


class ArmController:
    """Maps the contract's delta-pose action to actuator targets (one DLS IK step per call).

    The target pose integrates the commanded deltas starting from the measured pose at reset;
    it is re-anchored to the measured pose when the two drift apart (e.g. the hand is blocked
    by an object), so the arm never winds up against an obstacle.
    """

    DAMPING = 0.05  # DLS damping (lambda); keeps steps bounded near singularities
    REANCHOR_DIST = 0.04  # metres between target and measured EE before re-anchoring

    def __init__(self, model: mujoco.MjModel, idx: ArmIndices) -> None:
        self.model = model
        self.idx = idx
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._jac = np.zeros((6, 6))
        self._err = np.zeros(6)
        self._quat = np.zeros(4)
        self._dq = np.zeros(4)
        self._neg = np.zeros(4)
        self._ee_quat = np.zeros(4)
        self.target_pos = np.zeros(3)
        self.target_quat = np.zeros(4)
        joint_ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in ARM_JOINTS]
        self._lo = model.jnt_range[joint_ids, 0].copy()
        self._hi = model.jnt_range[joint_ids, 1].copy()
        self._eye6 = np.eye(6) * self.DAMPING**2

    def ee_quat(self, data: mujoco.MjData) -> np.ndarray:
        """World orientation (wxyz) of the end-effector site."""
        mujoco.mju_mat2Quat(self._ee_quat, data.site_xmat[self.idx.ee_site])
        return self._ee_quat

    def reset(self, data: mujoco.MjData) -> None:
        """Anchor the target pose to the measured pose and hold the current joint positions."""
        self.target_pos[:] = data.site_xpos[self.idx.ee_site]
        self.target_quat[:] = self.ee_quat(data)
        data.ctrl[self.idx.arm_act] = data.qpos[self.idx.qpos]

    def apply(self, data: mujoco.MjData, action: np.ndarray) -> None:
        """Set ``data.ctrl`` from a clipped 7-dim action (kinematics in ``data`` must be current)."""
        ee_pos = data.site_xpos[self.idx.ee_site]
        ee_quat = self.ee_quat(data)
        if np.linalg.norm(self.target_pos - ee_pos) > self.REANCHOR_DIST:
            self.target_pos[:] = ee_pos
            self.target_quat[:] = ee_quat
        self.target_pos += action[:3] * ACTION_POS_SCALE
        np.clip(self.target_pos, WORKSPACE_LOW, WORKSPACE_HIGH, out=self.target_pos)
        rotvec = action[3:6] * ACTION_ROT_SCALE
        angle = float(np.linalg.norm(rotvec))
        if angle > 1e-9:
            mujoco.mju_axisAngle2Quat(self._quat, rotvec / angle, angle)
            mujoco.mju_mulQuat(self.target_quat, self._quat, self.target_quat.copy())
            mujoco.mju_normalize4(self.target_quat)

        self._err[:3] = self.target_pos - ee_pos
        mujoco.mju_negQuat(self._neg, ee_quat)
        mujoco.mju_mulQuat(self._dq, self.target_quat, self._neg)
        mujoco.mju_quat2Vel(self._err[3:], self._dq, 1.0)
        mujoco.mj_jacSite(self.model, data, self._jacp, self._jacr, self.idx.ee_site)
        self._jac[:3] = self._jacp[:, self.idx.dof]
        self._jac[3:] = self._jacr[:, self.idx.dof]
        jac = self._jac
        dq = jac.T @ np.linalg.solve(jac @ jac.T + self._eye6, self._err)
        q = data.qpos[self.idx.qpos] + dq
        data.ctrl[self.idx.arm_act] = np.clip(q, self._lo, self._hi)
        data.ctrl[self.idx.grip_act] = (float(action[6]) + 1.0) * 0.5 * FINGER_TRAVEL

