"""The suite's simulated arm (``sims``) in-process behind the :class:`robots.base.Robot` interface.

Why: the deploy loop, the safety filter and the episode logging can then be exercised end to end
on a task whose success is known (the task's own predicate), with the task's scripted expert as a
policy, before a real arm is involved. ``sims`` and ``mujoco`` are reached only through
:mod:`robots.adapters` (``sims.make_env``, ``sims.make_expert``, ``sims.substeps``,
``mujoco.mj_forward``), imported when a ``MujocoRobot`` is built or homed, so ``import robots``
stays light on a robot computer.

Time: the simulator advances only in :meth:`MujocoRobot.send_action` (one control period,
``SUBSTEPS x TIMESTEP`` = 100 ms of physics). A hold freezes the arm at its measured pose without
stepping, so an observation is always current: its stamp is the time it was read.

The observation is the contract's sims observation (state 14: 6 joints, gripper closure 0..1,
EE position, EE quaternion wxyz); the action space is ``ee_delta``. The gripper closure is not in
contract command units (-1..1), so ``state_layout.gripper`` stays null and the filter bounds the
gripper by range and by rate from its own previous command.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robots.adapters import load_adapter
from robots.base import (
    STAMP_KEY,
    Robot,
    RobotConfig,
    RobotError,
    RobotLimits,
    StateLayout,
    register_robot,
)
from robots.config import ConfigError
from vla_rft.contract import ACTION_POS_SCALE, ACTION_ROT_SCALE, TASK_KEY

SIM_CONTROL_HZ = 10.0
"""The sims env's control rate (50 substeps of 2 ms); a config asking for another rate is refused."""


def _sim_limits() -> RobotLimits:
    # The sims controller's target box (sims.arm.WORKSPACE_LOW/HIGH), with the arm's joint ranges.
    return RobotLimits(action_space="ee_delta", ee_workspace_min=[0.18, -0.40, 0.005],
                       ee_workspace_max=[0.80, 0.40, 0.50], ee_vel_max=0.25, ee_acc_max=2.5,
                       ee_rot_vel_max=1.6, ee_rot_acc_max=16.0, gripper_rate_max=20.0)


@dataclass
class MujocoRobotConfig(RobotConfig):
    """The sims arm on one task (action space ``ee_delta``, 10 Hz)."""

    control_hz: float = SIM_CONTROL_HZ
    """Must be 10: one action is 100 ms of physics in the sims env."""
    limits: RobotLimits = field(default_factory=_sim_limits)
    """Hard limits; the workspace box defaults to the sims controller's own box."""
    state_layout: StateLayout = field(default_factory=lambda: StateLayout([0, 6], None, [7, 10]))
    """Joints at 0..6 and EE position at 7..10 of the 14-dim sims state (gripper: see module doc)."""
    cameras: list[str] = field(default_factory=lambda: ["front"])
    """Cameras to render (``front``, ``wrist``); empty renders nothing."""
    task: str = "reach_target"
    """sims task name (``vla-rft tasks`` lists them)."""
    image_size: int = 64
    """Square camera resolution in pixels."""
    perturbation: str = "none"
    """sims perturbation level(s), comma-separated (``none``, ``visual``, ``execution``, ...)."""
    seed: int = 0
    """Episode ``i`` (counted from construction) resets the scene with ``seed + i``."""
    instruction: str = ""
    """Language instruction put in observations; empty: the task's sampled instruction."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.control_hz != SIM_CONTROL_HZ:
            raise ConfigError(f"control_hz must be {SIM_CONTROL_HZ} for the sims arm, got {self.control_hz}")
        if self.limits.action_space != "ee_delta":
            raise ConfigError("the sims arm takes ee_delta actions")
        scales = (self.limits.ee_pos_scale, self.limits.ee_rot_scale)
        if scales != (ACTION_POS_SCALE, ACTION_ROT_SCALE):
            raise ConfigError(f"limits.ee_pos_scale/ee_rot_scale must be {ACTION_POS_SCALE}/{ACTION_ROT_SCALE} "
                              f"for the sims arm (its controller's action scale), got {scales[0]}/{scales[1]}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8, got {self.image_size}")


@dataclass(frozen=True)
class Outcome:
    """What the robot knows about the episode so far (only simulated robots know it)."""

    reward: float
    """The task's dense reward in [0, 1] for the current state."""
    success: bool
    """The task's success predicate on the current state."""


@register_robot("mujoco")
class MujocoRobot(Robot):
    """A sims task's arm stepped in-process; thread-safe (the watchdog may hold concurrently)."""

    config_class = MujocoRobotConfig

    def __init__(self, config: MujocoRobotConfig) -> None:
        super().__init__(config)
        self.config: MujocoRobotConfig = config
        # Headless by default (a deploy box has no display); an explicit MUJOCO_GL wins.
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
        # heavy (mujoco + gymnasium): imported only when a simulated robot is asked for
        make_env = load_adapter("sims.make_env")

        self.env = make_env(config.task, obs_mode="rgb" if config.cameras else "state",
                            cameras=list(config.cameras), image_size=config.image_size,
                            perturbation=config.perturbation, terminate_on_success=False).unwrapped
        period = self.env.physics.model.opt.timestep * _substeps()
        if abs(period - 1.0 / SIM_CONTROL_HZ) > 1e-9:
            raise RobotError(f"sims steps {period} s per action, expected {1 / SIM_CONTROL_HZ} s")
        self.task: str | None = config.instruction or None
        """Instruction override (the deploy loop's ``--task``); None: the task's own instruction."""
        self.episodes = 0
        self.holds = 0
        self.estopped = False
        self._lock = threading.Lock()
        self._obs: dict[str, Any] = {}
        self.reset()

    # ------------------------------------------------------------------ episode
    def reset(self) -> None:
        """A new scene: reseeded with ``seed + episode index``; clears an e-stop."""
        with self._lock:
            obs, _ = self.env.reset(seed=self.config.seed + self.episodes)
            self.episodes += 1
            self.estopped = False
            self._obs = obs

    def outcome(self) -> Outcome:
        """The task's dense reward and success predicate on the current physics state."""
        with self._lock:
            task, physics = self.env.task, self.env.physics
            success = bool(task.success(physics))
            return Outcome(1.0 if success else float(task.dense_reward(physics)), success)

    def make_expert(self) -> Callable[[dict[str, Any]], np.ndarray]:
        """The task's scripted (privileged) expert driving this robot's scene: ``obs -> action``."""
        return load_adapter("sims.make_expert")(self.config.task, self.env)

    @property
    def instruction(self) -> str:
        return self.task if self.task else self.env.instruction

    # ------------------------------------------------------------------ Robot interface
    def get_observation(self) -> dict[str, Any]:
        """The observation after the last step; current, since physics only moves in send_action."""
        with self._lock:
            obs = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self._obs.items()}
        obs[TASK_KEY] = self.instruction
        obs[STAMP_KEY] = time.monotonic()
        return obs

    def send_action(self, action: np.ndarray) -> None:
        """Step the sims env one control period with a filtered ``ee_delta`` action."""
        a = np.asarray(action, dtype=np.float32)
        with self._lock:
            if self.estopped:
                raise RobotError("the simulated arm is e-stopped; reset() clears it")
            self._obs, *_ = self.env.step(a)

    def hold(self) -> None:
        """Freeze the arm: joint targets at the measured joints, IK target at the measured pose."""
        with self._lock:
            self.env.controller.reset(self.env.physics.data)
            self.holds += 1

    def estop(self) -> None:
        """Hold and refuse motion until the next :meth:`reset`."""
        self.hold()
        with self._lock:
            self.estopped = True

    def home(self) -> None:
        """Put the arm at the configured home joints (the simulator teleports; objects stay)."""
        if not self.config.home:
            return
        mj_forward = load_adapter("mujoco.mj_forward")

        with self._lock:
            m, d = self.env.physics.model, self.env.physics.data
            arm = self.env.physics.arm
            d.qpos[arm.qpos] = self.config.home
            d.qvel[arm.dof] = 0.0
            mj_forward(m, d)
            self.env.controller.reset(d)
            self._obs = self.env._observation()

    def close(self) -> None:
        self.hold()
        self.env.close()


def _substeps() -> int:
    return int(load_adapter("sims.substeps"))
