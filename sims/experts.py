"""Scripted experts: a sequence of phases, each a target gripper pose and a finish test.

Experts read privileged state (object poses), never pixels. Each phase gives a target position,
a target yaw for the downward-pointing gripper and a gripper command; the expert steers toward
the target with a proportional law saturated at the action limits. A phase ends when the
gripper is within its tolerance (and after ``min_steps``), or when its ``until`` test holds;
a ``restart_if`` test sends the expert back to the first phase (e.g. the object slipped, or
the execution perturbation displaced it), which is what makes the experts closed-loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from sims.arm import DOWN_QUAT
from sims.scene import yaw_quat
from vla_rft.contract import ACTION_POS_SCALE, ACTION_ROT_SCALE, ARM_ACTION_DIM

Priv = dict[str, np.ndarray]
OPEN, CLOSED = -1.0, 1.0
POS_GAIN = 0.45  # fraction of the remaining error commanded per step (stable with 1-step lag)
ROT_GAIN = 0.5


@dataclass
class Phase:
    """One stage of a scripted behaviour."""

    target: Callable[[Priv], np.ndarray]  # (3,) target gripper position
    grip: float = OPEN
    yaw: Callable[[Priv], float] | None = None  # None: keep yaw 0
    tol: float = 0.01  # metres
    min_steps: int = 0
    max_speed: float = 1.0  # cap on the translation action's norm, in action units
    until: Callable[[Priv], bool] | None = None
    restart_if: Callable[[Priv], bool] | None = None


class Expert:
    """Runs phases in order; call it with the privileged state to get a contract action."""

    def __init__(self, phases: Sequence[Phase], down_quat: np.ndarray = DOWN_QUAT) -> None:
        self.phases = list(phases)
        self.down_quat = down_quat  # the gripper frame pointing down at yaw 0 (per arm)
        self.reset()
        self._quat = np.zeros(4)
        self._neg = np.zeros(4)
        self._err_quat = np.zeros(4)
        self._rot = np.zeros(3)

    def reset(self) -> None:
        self.index = 0
        self.steps_in_phase = 0

    def __call__(self, priv: Priv) -> np.ndarray:
        if int(priv["step"]) == 0:
            self.reset()
        self._advance(priv)
        phase = self.phases[self.index]
        self.steps_in_phase += 1
        action = np.zeros(ARM_ACTION_DIM, dtype=np.float32)
        err = phase.target(priv) - priv["ee_pos"]
        move = err * (POS_GAIN / ACTION_POS_SCALE)
        norm = float(np.linalg.norm(move))
        if norm > phase.max_speed:
            move *= phase.max_speed / norm
        action[:3] = move
        action[3:6] = self._rotation(priv["ee_quat"], phase.yaw(priv) if phase.yaw else 0.0)
        action[6] = phase.grip
        return np.clip(action, -1.0, 1.0)

    def _advance(self, priv: Priv) -> None:
        """Move to the next phase(s) whose finish tests hold; restart on ``restart_if``."""
        while True:
            phase = self.phases[self.index]
            if phase.restart_if is not None and phase.restart_if(priv) and self.index > 0:
                self.index, self.steps_in_phase = 0, 0
                continue
            reached = np.linalg.norm(phase.target(priv) - priv["ee_pos"]) < phase.tol
            done = phase.until(priv) if phase.until is not None else reached
            if not (done and self.steps_in_phase >= phase.min_steps):
                return
            if self.index == len(self.phases) - 1:
                return
            self.index += 1
            self.steps_in_phase = 0

    def _rotation(self, ee_quat: np.ndarray, yaw: float) -> np.ndarray:
        """Axis-angle action turning the gripper to point down at ``yaw`` (world frame)."""
        mujoco.mju_mulQuat(self._quat, yaw_quat(yaw), self.down_quat)
        mujoco.mju_negQuat(self._neg, ee_quat)
        mujoco.mju_mulQuat(self._err_quat, self._quat, self._neg)
        mujoco.mju_quat2Vel(self._rot, self._err_quat, 1.0)
        return self._rot * (ROT_GAIN / ACTION_ROT_SCALE)


def square_yaw(yaw: float) -> float:
    """Equivalent grasp yaw of a square object (90-degree symmetry), folded into [-pi/4, pi/4]."""
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def above(key: str, height: float, dz: float = 0.0) -> Callable[[Priv], np.ndarray]:
    """Target function: the privileged position ``key`` raised to ``height`` (+ ``dz``)."""

    def target(priv: Priv) -> np.ndarray:
        p = priv[key].copy()
        p[2] = height + dz
        return p

    return target


def at(key: str, dz: float = 0.0) -> Callable[[Priv], np.ndarray]:
    """Target function: the privileged position ``key`` offset by ``dz``."""

    def target(priv: Priv) -> np.ndarray:
        p = priv[key].copy()
        p[2] += dz
        return p

    return target


def pick_phases(obj: str, yaw_key: str, half: float, lift_to: float, floor: float = 0.0) -> list[Phase]:
    """Approach above ``obj``, descend, close, lift: the first half of every pick task.

    Heights are above ``floor``, the table top's world z (0 in our scenes, not in robosuite's).

    Restarts from the approach when the object moved away from under the open gripper, or
    when it dropped out of a closed grasp.
    """
    yaw = lambda p: square_yaw(float(p[yaw_key]))
    lost = lambda p: bool(np.linalg.norm(p[obj][:2] - p["ee_pos"][:2]) > 0.03)
    dropped = lambda p: not bool(p["grasped"])
    return [
        Phase(above(obj, floor + half + 0.10), OPEN, yaw, tol=0.012),
        Phase(at(obj, -0.005), OPEN, yaw, tol=0.008, max_speed=0.7, restart_if=lost),
        Phase(at(obj, -0.005), CLOSED, yaw, min_steps=4, until=lambda p: True, restart_if=lost),
        Phase(above(obj, floor + lift_to), CLOSED, yaw, tol=0.02, restart_if=dropped),
    ]
