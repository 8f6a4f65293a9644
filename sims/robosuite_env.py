"""robosuite tasks (Panda arm) behind the project's observation/action contract.

Four robosuite 1.5 environments join the suite as ``robosuite_lift``, ``robosuite_stack``,
``robosuite_pick_place_can`` and ``robosuite_door``. Their task classes are registered at
``import sims`` time without importing robosuite (an optional extra); only building an env
(:class:`RobosuiteEnv`) needs it, and says how to install it when it is missing.

Observation: ``observation.images.front`` (robosuite's ``agentview``) and
``observation.images.wrist`` (``robot0_eye_in_hand``), uint8 upright; ``observation.state``
float32 (15,):

    [0:7]   Panda joint positions (rad)
    [7]     gripper closure, 0 fully open .. 1 fully closed (normalized finger opening)
    [8:11]  end-effector (grip site, between the fingertips) position, world frame (m)
    [11:15] grip site orientation quaternion, wxyz, world frame

Action: the contract's 7-dim end-effector delta (see :mod:`vla_rft.contract`), mapped onto
robosuite's OSC_POSE delta input through the controller's own input/output ranges, and an
absolute gripper command. Control runs at 10 Hz like the rest of the suite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sims.experts import CLOSED, OPEN, Expert, Phase, Priv, above, pick_phases
from sims.external import ExternalSuiteEnv, import_optional
from sims.registry import register_task
from vla_rft.contract import (
    ACTION_POS_SCALE,
    ACTION_ROT_SCALE,
    IMAGE_PREFIX,
    STATE_KEY,
    TASK_KEY,
)

if TYPE_CHECKING:
    from robosuite.environments.manipulation.manipulation_env import ManipulationEnv

STATE_DIM = 15
CONTROL_FREQ = 10  # Hz, the suite's control rate
# robosuite's OSC default kp (150) is tuned for 20 Hz; with the goal re-anchored at the achieved
# pose every step, a held command then moves the gripper only ~45% of the commanded delta per
# 100 ms step. At 1000 (still critically damped, stable at the 2 ms physics step) it moves ~86%
# of a held translation and turns ~70% of a held rotation (measured), so the contract's "metres
# (radians) per step" hold roughly.
OSC_KP = 1000
# Our camera names -> robosuite's.
CAMERA_MAP = {"front": "agentview", "wrist": "robot0_eye_in_hand"}
# The grip site pointing straight down at yaw 0 (its x along world +y, y along +x), wxyz.
PANDA_DOWN_QUAT = np.array([0.0, np.sqrt(0.5), np.sqrt(0.5), 0.0])
INSTALL_HINT = (
    "robosuite tasks need robosuite, which is not installed: run "
    "`pip install --no-deps robosuite==1.5.2 mink==0.0.5 && pip install 'vla-rft[robosuite]'` "
    "(what scripts/install.sh does; see docs/install.md)"
)


def import_robosuite() -> Any:
    """``import robosuite``, or a :class:`UserInputError` naming the extra to install. robosuite's
    own console log (controller-config and macro-file warnings) goes to the run's warnings.log."""
    from vla_rft.run import warning_log

    warning_log.capture_logger("robosuite_logs")
    return import_optional("robosuite", INSTALL_HINT)


class RobosuiteTask:
    """A robosuite environment as a task of the suite.

    Class attributes are what :func:`sims.list_tasks` and the CLI read (no robosuite needed);
    :meth:`bind` caches ids in a built robosuite env; :meth:`privileged_state` and
    :meth:`make_expert` mirror :class:`sims.task.Task`'s.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "robosuite"
    env_name: ClassVar[str] = ""  # robosuite.make's environment name
    templates: ClassVar[tuple[str, ...]] = ()
    heldout_templates: ClassVar[tuple[str, ...]] = ()
    max_episode_steps: ClassVar[int] = 100
    entry_point: ClassVar[str] = "sims.robosuite_env:RobosuiteEnv"
    state_dim: ClassVar[int] = STATE_DIM
    make_kwargs: ClassVar[dict[str, Any]] = {}  # extra robosuite.make arguments

    def bind(self, env: ManipulationEnv) -> None:
        self.env = env
        self.table_z = self.table_top(env)
        self.gripper = env.robots[0].gripper["right"]

    @staticmethod
    def table_top(env: ManipulationEnv) -> float:
        """World z of the surface the objects stand on."""
        return float(np.asarray(env.table_offset)[2])

    def privileged_state(self) -> Priv:
        """Task-object positions (world frame) for experts and analysis."""
        return {}

    def make_expert(self) -> Expert:
        from vla_rft.errors import UserInputError

        raise UserInputError(f"{self.name} has no scripted expert yet (Lift and Stack do); collect with --policy")

    def _body(self, body_id: int) -> tuple[np.ndarray, float]:
        """World position and yaw of a body."""
        data = self.env.sim.data
        w, _, _, z = data.body_xquat[body_id]
        return data.body_xpos[body_id].copy(), float(2.0 * np.arctan2(z, w))

    def _grasped(self, obj: Any) -> np.ndarray:
        return np.array(bool(self.env._check_grasp(gripper=self.gripper, object_geoms=obj)))


@register_task("robosuite_lift")
class RobosuiteLift(RobosuiteTask):
    """robosuite Lift: grasp the cube and raise it 4 cm above the table."""

    env_name = "Lift"
    templates = ("lift the red cube", "pick up the red cube from the table", "raise the red block")
    heldout_templates = ("hoist the crimson box", "elevate the red brick")
    max_episode_steps = 100

    def privileged_state(self) -> Priv:
        pos, yaw = self._body(self.env.cube_body_id)
        return {"cube": pos, "cube_yaw": np.array(yaw), "grasped": self._grasped(self.env.cube)}

    def make_expert(self) -> Expert:
        half = float(self.env.cube.size[2])
        return Expert(pick_phases("cube", "cube_yaw", half, 0.15, floor=self.table_z), PANDA_DOWN_QUAT)


@register_task("robosuite_stack")
class RobosuiteStack(RobosuiteTask):
    """robosuite Stack: put the small red cube (A) on the larger green cube (B)."""

    env_name = "Stack"
    templates = (
        "stack the red cube on the green cube",
        "put the red block on top of the green block",
        "place the red cube onto the green one",
    )
    heldout_templates = ("set the crimson box on the lime box", "pile the red brick onto the green brick")
    max_episode_steps = 150

    def privileged_state(self) -> Priv:
        a, yaw_a = self._body(self.env.cubeA_body_id)
        b, _ = self._body(self.env.cubeB_body_id)
        return {"cubeA": a, "cubeA_yaw": np.array(yaw_a), "cubeB": b,
                "grasped": self._grasped(self.env.cubeA)}

    def make_expert(self) -> Expert:
        half_a, half_b = float(self.env.cubeA.size[2]), float(self.env.cubeB.size[2])
        phases = pick_phases("cubeA", "cubeA_yaw", half_a, 0.2, floor=self.table_z)
        yaw = phases[0].yaw
        dropped = phases[-1].restart_if

        def over_b(clearance: float) -> Any:
            """Gripper target that puts cube A ``clearance`` above cube B's top face, whatever
            the grasp offset between the gripper and cube A."""

            def target(p: Priv) -> np.ndarray:
                goal = p["cubeB"] + np.array([0.0, 0.0, half_b + half_a + clearance])
                return goal + (p["ee_pos"] - p["cubeA"])

            return target

        return Expert([
            *phases,
            Phase(over_b(0.05), CLOSED, yaw, tol=0.01, restart_if=dropped),
            Phase(over_b(0.005), CLOSED, yaw, tol=0.006, max_speed=0.5, restart_if=dropped),
            Phase(over_b(0.005), OPEN, yaw, min_steps=3, until=lambda p: True),
            Phase(above("cubeB", self.table_z + 0.25), OPEN, yaw, tol=0.02),
        ], PANDA_DOWN_QUAT)


@register_task("robosuite_pick_place_can")
class RobosuitePickPlaceCan(RobosuiteTask):
    """robosuite PickPlaceCan: move the can from the left bin into its compartment of the right bin."""

    env_name = "PickPlaceCan"
    templates = ("put the can in its bin", "move the can into the right bin", "place the soda can in its compartment")
    heldout_templates = ("transfer the tin to its box", "drop the can into its slot")
    max_episode_steps = 200

    @staticmethod
    def table_top(env: ManipulationEnv) -> float:
        return float(env.bin1_pos[2])

    def privileged_state(self) -> Priv:
        pos, yaw = self._body(self.env.obj_body_id["Can"])
        goal = self.env.target_bin_placements[self.env.object_to_id["can"]]
        return {"can": pos, "can_yaw": np.array(yaw), "goal": np.array(goal, dtype=float),
                "grasped": self._grasped(self.env.objects[self.env.object_to_id["can"]])}


@register_task("robosuite_door")
class RobosuiteDoor(RobosuiteTask):
    """robosuite Door: turn the handle and pull the door open past 0.3 rad."""

    env_name = "Door"
    templates = ("open the door", "pull the door open", "turn the handle and open the door")
    heldout_templates = ("swing the door open", "get the door open by its handle")
    max_episode_steps = 150
    make_kwargs: ClassVar[dict[str, Any]] = {"use_latch": True}

    def privileged_state(self) -> Priv:
        data = self.env.sim.data
        return {"handle": data.site_xpos[self.env.door_handle_site_id].copy(),
                "hinge": np.array(data.qpos[self.env.hinge_qpos_addr])}


class RobosuiteEnv(ExternalSuiteEnv):
    """A robosuite task as a gymnasium env in the contract (the kwargs of :class:`SimEnv`, see
    :class:`sims.external.ExternalSuiteEnv`); ``"dense"`` is robosuite's shaped reward, normalized
    by robosuite to [0, 1]."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}
    camera_map = CAMERA_MAP
    task_base = RobosuiteTask
    state_dim = STATE_DIM

    def __init__(self, task: str, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        cls = type(self.task)
        rgb = self.obs_mode == "rgb"
        robosuite = import_robosuite()
        controller = robosuite.load_composite_controller_config(controller="BASIC", robot="Panda")
        arm = controller["body_parts"]["right"]
        arm["kp"] = OSC_KP
        self._input_scale = _osc_input_scale(arm)
        self._env = robosuite.make(
            cls.env_name,
            robots="Panda",
            controller_configs=controller,
            control_freq=CONTROL_FREQ,
            horizon=cls.max_episode_steps,
            ignore_done=True,  # the gymnasium TimeLimit truncates
            hard_reset=False,  # keep the compiled model across resets (seconds each otherwise)
            reward_shaping=True,
            reward_scale=1.0,
            use_object_obs=False,
            has_renderer=False,
            has_offscreen_renderer=rgb or self.render_mode == "rgb_array",
            use_camera_obs=rgb,
            camera_names=[CAMERA_MAP[c] for c in self.cameras] if rgb else "agentview",
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            **cls.make_kwargs,
        )
        self.task.bind(self._env)
        robot = self._env.robots[0]
        self._gripper = robot.gripper["right"]
        model = self._env.sim.model
        joints = [model.joint_name2id(j) for j in self._gripper.joints]
        self._finger_qpos = [model.jnt_qposadr[j] for j in joints]
        self._max_opening = float(model.jnt_range[joints[0], 1] - model.jnt_range[joints[1], 0])
        self._raw: dict[str, Any] = {}

    # -- gymnasium API --
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        # robosuite samples object poses and joint noise from env.rng, a Generator its placement
        # samplers share by reference: reseed it in place from our seeded stream.
        seeded = np.random.default_rng(int(self.np_random.integers(2**63)))
        self._env.rng.bit_generator.state = seeded.bit_generator.state
        self._raw = self._env.reset()
        info = self._begin_episode(float(np.clip(self._env.reward(None), 0.0, 1.0)))  # phi of the first state
        return self._observation(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        a = self._checked(action)
        # The Panda gripper integrates sign(command) at 0.2 per step; set its target directly
        # instead (the contract's command is absolute) and send 0, which leaves it unchanged.
        self._gripper.current_action = np.array([-a[6], a[6]], dtype=float)
        delta = np.concatenate((a[:3] * ACTION_POS_SCALE, a[3:6] * ACTION_ROT_SCALE))
        self._raw, shaped, _, _ = self._env.step(np.append(delta / self._input_scale, 0.0))
        return self._end_step(bool(self._env._check_success()), float(shaped))

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if "front" in self.cameras and self.obs_mode == "rgb":
            return self._image("front")
        frame = self._env.sim.render(camera_name=CAMERA_MAP["front"], width=self.image_size, height=self.image_size)
        return np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        self._env.close()

    # -- public helpers --
    def privileged_state(self) -> dict[str, np.ndarray]:
        """Ground truth for experts: gripper pose and closure, step count, task objects."""
        priv = self.task.privileged_state()
        state = self._state()
        priv["ee_pos"] = state[8:11].astype(float)
        priv["ee_quat"] = state[11:15].astype(float)
        priv["gripper"] = np.array(float(state[7]))
        priv["step"] = np.array(self.elapsed_steps)
        return priv

    # -- internals --
    def _state(self) -> np.ndarray:
        raw = self._raw
        qpos = self._env.sim.data.qpos
        opening = float(qpos[self._finger_qpos[0]] - qpos[self._finger_qpos[1]])
        closure = float(np.clip(1.0 - opening / self._max_opening, 0.0, 1.0))
        x, y, z, w = raw["robot0_eef_quat_site"]  # robosuite quaternions are xyzw
        return np.concatenate(
            (raw["robot0_joint_pos"], (closure,), raw["robot0_eef_pos"], (w, x, y, z))
        ).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {STATE_KEY: self._state(), TASK_KEY: self.instruction}
        if self.obs_mode == "rgb":
            obs.update({IMAGE_PREFIX + cam: self._image(cam) for cam in self.cameras})
        return obs

    def _image(self, cam: str) -> np.ndarray:
        """The camera observable, flipped upright (robosuite renders in OpenGL's convention)."""
        return np.ascontiguousarray(self._raw[CAMERA_MAP[cam] + "_image"][::-1])


def _osc_input_scale(arm: dict[str, Any]) -> np.ndarray:
    """Metres (rad) of goal offset per unit of OSC delta input, per axis.

    OSC maps its input linearly, ``out = (in - in_mid) * (out_range / in_range) + out_mid``;
    every range here is symmetric about 0, so input = offset / scale.
    """
    out_max = np.broadcast_to(np.asarray(arm["output_max"], dtype=float), (6,))
    out_min = np.broadcast_to(np.asarray(arm["output_min"], dtype=float), (6,))
    in_max = np.broadcast_to(np.asarray(arm["input_max"], dtype=float), (6,))
    in_min = np.broadcast_to(np.asarray(arm["input_min"], dtype=float), (6,))
    if np.any(out_max + out_min) or np.any(in_max + in_min):
        raise ValueError(f"expected OSC ranges symmetric about 0, got {arm}")
    return out_max / in_max
