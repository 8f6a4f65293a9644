"""The gymnasium environment wrapping one task of the suite in the project's contract.

Observation (``obs_mode="rgb"``): ``observation.images.<camera>`` uint8 (H, W, 3) per camera,
``observation.state`` float32 (14,) and ``task`` (the instruction). ``obs_mode="state"``
renders nothing. State layout (see docs/tasks.md):

    [0:6]   arm joint positions j1..j6 (rad)
    [6]     gripper closure, 0 fully open .. 1 fully closed (normalized finger travel)
    [7:10]  end-effector (gripper pinch point) position, world frame (m)
    [10:14] end-effector orientation quaternion, wxyz, world frame

Action: the contract's 7-dim end-effector delta pose + absolute gripper (see
:mod:`vla_rft.contract`). Entries outside [-1, 1] are clipped and counted in
``info["action_clipped"]``; NaN/inf or a wrong shape raises :class:`ContractError`.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from sims.arm import HOME_QPOS, ArmController
from sims.perturbations import PerturbationApplier, add_distractors, parse_perturbation
from sims.registry import get_task_class
from sims.scene import CAMERAS, SUBSTEPS, Physics, SceneBuilder
from sims.task import EpisodeOptions
from vla_rft.contract import ARM_ACTION_DIM, IMAGE_PREFIX, STATE_KEY, TASK_KEY, ContractError

REWARD_TYPES = ("dense", "sparse", "potential")

STATE_DIM = 14
INSTRUCTION_MAX_LENGTH = 200
INSTRUCTION_CHARSET = frozenset(string.ascii_letters + string.digits + " ,.'-")


class SimEnv(gym.Env[dict[str, Any], np.ndarray]):
    """One task of the suite as a gymnasium env (10 Hz control, 50 physics substeps per step).

    Args:
        task: registered task name (see :func:`sims.list_tasks`).
        obs_mode: ``"rgb"`` renders the chosen cameras; ``"state"`` renders nothing (fast).
        cameras: cameras to render in ``"rgb"`` mode, a subset of ``("front", "wrist")``.
        image_size: square image side in pixels.
        perturbation: ``"none"`` or comma-separated levels (see :mod:`sims.perturbations`).
        reward_type: ``"dense"`` (staged shaping phi in [0, 1], 1 on success), ``"sparse"`` (1 on
            success) or ``"potential"``: 1 on success plus the potential-based shaping
            ``potential_gamma * phi(s') - phi(s)`` (Ng et al. 1999). With phi = 1 exactly at
            success, an episode's discounted return is gamma^T (phi(s_T) + 1/gamma * success) -
            phi(s_0): the return of the sparse task with a success reward of 1 + gamma, minus a
            constant, so the shaping leaves the optimal policies unchanged for an agent whose
            discount is ``potential_gamma``, and, unlike ``"dense"`` with
            ``terminate_on_success``, succeeding early never earns less than hovering just short
            of success until the time limit.
        potential_gamma: the discount of the agent the potential reward is shaped for.
        terminate_on_success: end the episode (``terminated=True``) when the task succeeds.
        render_mode: ``"rgb_array"`` makes :meth:`render` return the front camera image.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str,
        obs_mode: str = "rgb",
        cameras: list[str] | tuple[str, ...] | None = None,
        image_size: int = 64,
        perturbation: str = "none",
        reward_type: str = "dense",
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        potential_gamma: float = 0.99,
    ) -> None:
        _check_choice("obs_mode", obs_mode, ("rgb", "state"))
        _check_choice("reward_type", reward_type, REWARD_TYPES)
        self.cameras = tuple(CAMERAS if cameras is None else cameras)
        for cam in self.cameras:
            _check_choice("camera", cam, CAMERAS)
        self.task = get_task_class(task)()
        self.obs_mode = obs_mode
        self.image_size = int(image_size)
        self.reward_type = reward_type
        self.terminate_on_success = terminate_on_success
        self.potential_gamma = checked_gamma(potential_gamma)
        self.render_mode = render_mode
        self.perturbation = parse_perturbation(perturbation)

        scene = SceneBuilder(image_size=self.image_size)
        self.task.build(scene)
        add_distractors(scene)
        self.physics = Physics(scene.to_xml())
        self.task.bind(self.physics)
        self.controller = ArmController(self.physics.model, self.physics.arm)
        self.perturber = PerturbationApplier(self.physics, self.perturbation, _object_bodies(self.physics))
        self._displace_bodies = [self.physics.body_id(b) for b in self.task.displaceable]
        self._renderers: dict[str, mujoco.Renderer] = {}
        self._camera_ids = {c: self.physics.camera_id(c) for c in CAMERAS}
        self.observation_space = observation_space(STATE_DIM, self.cameras if obs_mode == "rgb" else (), self.image_size)
        self.action_space = spaces.Box(-1.0, 1.0, (ARM_ACTION_DIM,), dtype=np.float32)
        self.instruction = ""
        self.elapsed_steps = 0
        self._displace_at = -1
        self._clipped_total = 0
        self.lazy_frames = False
        self.episode_limit: int | None = None  # the TimeLimit's steps; sims.make_env sets it
        self._frames_requested = False
        self._frames: dict[str, np.ndarray] = {}

    # -- gymnasium API --
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        m, d = self.physics.model, self.physics.data
        mujoco.mj_resetData(m, d)
        self.perturber.restore()
        noise = self.perturber.arm_joint_noise()
        d.qpos[self.physics.arm.qpos] = HOME_QPOS + rng.uniform(-noise, noise, size=HOME_QPOS.shape)
        semantic = "semantic" in self.perturbation
        fields = self.task.initialize_episode(self.physics, rng, EpisodeOptions(heldout_colors=semantic))
        templates = self.task.heldout_templates if semantic else self.task.templates
        self.instruction = str(templates[int(rng.integers(len(templates)))]).format(**fields)
        mujoco.mj_forward(m, d)
        self.perturber.apply_at_reset(rng, self._occupied())
        self._displace_at = self.perturber.displace_step(rng)
        mujoco.mj_forward(m, d)
        self.controller.reset(d)
        d.ctrl[self.physics.arm.grip_act] = 0.0
        self.elapsed_steps = 0
        self._clipped_total = 0
        self._phi = 1.0 if self.task.success(self.physics) else float(self.task.dense_reward(self.physics))
        return self._observation(), self._info(0)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        a, clipped = checked_action(action)
        self._clipped_total += clipped
        if self.elapsed_steps == self._displace_at:
            self._displace_object()
        m, d = self.physics.model, self.physics.data
        self.controller.apply(d, a)
        mujoco.mj_step(m, d, nstep=SUBSTEPS)
        self.physics.refresh_kinematics()
        self.elapsed_steps += 1
        success = self.task.success(self.physics)
        dense = 1.0 if success else self.task.dense_reward(self.physics)
        reward = step_reward(self.reward_type, dense, success, self._phi, self.potential_gamma)
        self._phi = dense
        terminated = success and self.terminate_on_success
        info = self._info(clipped, success=success, dense=dense)
        render = (not self.lazy_frames or self._frames_requested or terminated
                  or (self.episode_limit is not None and self.elapsed_steps >= self.episode_limit))
        self._frames_requested = False
        return self._observation(render=render), reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera("front")

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # -- public helpers --
    @property
    def max_episode_steps(self) -> int:
        return self.task.max_episode_steps

    def privileged_state(self) -> dict[str, np.ndarray]:
        """Ground truth for experts: gripper pose and closure, step count, task objects."""
        priv = self.task.privileged_state(self.physics)
        priv["ee_pos"] = self.physics.ee_pos().copy()
        priv["ee_quat"] = self.physics.ee_quat()
        priv["gripper"] = np.array(self.physics.gripper_closure())
        priv["step"] = np.array(self.elapsed_steps)
        return priv

    def set_lazy_frames(self, on: bool) -> None:
        """Lazy frames (chunked rollouts read images only at chunk starts): ``step`` renders the
        cameras only when :meth:`request_frames` was called before it, when the episode
        terminates, or on the step the time limit truncates it; ``reset`` always renders. On
        the other steps the image keys hold the last rendered frames. Rendering reads the
        state only, so the physics, rewards and rendered frames are the same as when eager."""
        self.lazy_frames = bool(on)
        self._frames_requested = False

    def request_frames(self) -> None:
        """Render the cameras on the next ``step`` (lazy frames)."""
        self._frames_requested = True

    # -- internals --
    def _observation(self, render: bool = True) -> dict[str, Any]:
        p = self.physics
        state = np.concatenate(
            (p.data.qpos[p.arm.qpos], (p.gripper_closure(),), p.ee_pos(), p.ee_quat())
        ).astype(np.float32)
        obs: dict[str, Any] = {STATE_KEY: state, TASK_KEY: self.instruction}
        if self.obs_mode == "rgb":
            if render or not self._frames:
                self._frames = {IMAGE_PREFIX + cam: self._render_camera(cam) for cam in self.cameras}
                obs.update(self._frames)
            else:  # lazy frames: a copy of the last rendered frames (observations never share memory)
                obs.update({k: v.copy() for k, v in self._frames.items()})
        return obs

    def _render_camera(self, cam: str) -> np.ndarray:
        renderer = self._renderers.get(cam)
        if renderer is None:
            renderer = self._renderers[cam] = _fast_renderer(self.physics.model, self.image_size)
        renderer.update_scene(self.physics.data, camera=self._camera_ids[cam])
        return renderer.render()

    def _info(self, clipped: int, success: bool = False, dense: float = 0.0) -> dict[str, Any]:
        return step_info(self.task.name, clipped, self._clipped_total, self.elapsed_steps, success, dense)

    def _occupied(self) -> list[np.ndarray]:
        """World positions of the task's bodies, so distractors keep clear of them."""
        priv = self.task.privileged_state(self.physics)
        return [np.asarray(v, dtype=float) for v in priv.values() if np.shape(v) == (3,)]

    def _displace_object(self) -> None:
        """Execution level: shift one task object in xy unless the gripper is holding it.

        Free-jointed objects move through their joint; mocap objects (targets, fixtures)
        through their mocap pose.
        """
        if not self._displace_bodies or self.task.privileged_state(self.physics).get("grasped", False):
            return
        m, d = self.physics.model, self.physics.data
        body = self._displace_bodies[int(self.np_random.integers(len(self._displace_bodies)))]
        shift = self.perturber.displacement(self.np_random)
        if m.body_mocapid[body] >= 0:
            d.mocap_pos[m.body_mocapid[body], :2] += shift
        else:
            adr = m.jnt_qposadr[m.body_jntadr[body]]
            d.qpos[adr : adr + 2] += shift
        mujoco.mj_forward(m, d)


def observation_space(state_dim: int, cameras: tuple[str, ...] | list[str], image_size: int) -> spaces.Dict:
    """The contract's observation space: state, instruction and one square image per camera."""
    space: dict[str, spaces.Space] = {
        STATE_KEY: spaces.Box(-np.inf, np.inf, (state_dim,), dtype=np.float32),
        TASK_KEY: spaces.Text(INSTRUCTION_MAX_LENGTH, charset=INSTRUCTION_CHARSET),
    }
    for cam in cameras:
        space[IMAGE_PREFIX + cam] = spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
    return spaces.Dict(space)


def step_info(task_name: str, clipped: int, clipped_total: int, elapsed_steps: int, success: bool = False,
              dense: float = 0.0) -> dict[str, Any]:
    """The ``info`` of a step (and of a reset): success, both rewards, action clipping, step count."""
    return {
        "is_success": success,
        "task_name": task_name,
        "reward_sparse": float(success),
        "reward_dense": dense,
        "action_clipped": clipped,
        "action_clipped_total": clipped_total,
        "elapsed_steps": elapsed_steps,
    }


def checked_gamma(potential_gamma: float) -> float:
    """The ``potential_gamma`` kwarg, a :class:`UserInputError` outside (0, 1]."""
    if not 0.0 < potential_gamma <= 1.0:
        from vla_rft.errors import UserInputError

        raise UserInputError(f"potential_gamma must be in (0, 1], got {potential_gamma}")
    return float(potential_gamma)


def step_reward(reward_type: str, dense: float, success: bool, phi: float, gamma: float) -> float:
    """A step's reward of each ``reward_type`` (see :class:`SimEnv`): ``dense`` phi(s'),
    ``sparse`` the success, ``potential`` gamma * phi(s') - phi(s) plus the success; ``phi`` is
    phi(s), ``dense`` phi(s') (1 on success)."""
    if reward_type == "dense":
        return dense
    if reward_type == "sparse":
        return float(success)
    return gamma * dense - phi + float(success)


def checked_action(action: np.ndarray) -> tuple[np.ndarray, int]:
    """A contract action as float32 ``(7,)`` clipped to [-1, 1], and how many entries were clipped
    (counted in ``info``); :class:`ContractError` for a wrong shape or a NaN / inf."""
    a = np.asarray(action, dtype=np.float32)
    if a.shape != (ARM_ACTION_DIM,):
        raise ContractError(f"action has shape {a.shape}, expected ({ARM_ACTION_DIM},)")
    if not np.isfinite(a).all():
        raise ContractError(f"action contains NaN or inf: {a}")
    clipped = int(np.count_nonzero(np.abs(a) > 1.0))
    return (np.clip(a, -1.0, 1.0) if clipped else a), clipped


def _fast_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """A renderer with shadows, reflections, skybox and haze off (about 10x faster on CPU)."""
    renderer = mujoco.Renderer(model, height=size, width=size)
    flags = renderer.scene.flags
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                 mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_HAZE):
        flags[flag] = 0
    return renderer


def _object_bodies(physics: Physics) -> list[int]:
    """Bodies other than the world and the arm that carry mass (task objects)."""
    m = physics.model
    arm_root = physics.body_id("arm_base")
    return [b for b in range(1, m.nbody) if m.body_rootid[b] != arm_root and m.body_mass[b] > 0]


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        from vla_rft.errors import UserInputError

        raise UserInputError(f"unknown {what} '{value}'; choose one of {choices}")
