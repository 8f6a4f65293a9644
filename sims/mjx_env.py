"""State-based versions of the suite's tasks stepped in batch on MuJoCo MJX (JAX): the physics
of :class:`sims.env.SimEnv` (the same MJCF, built by :mod:`sims.scene` for the task, 50 substeps
of 2 ms per 10 Hz control step), the same damped-least-squares controller as
:class:`sims.arm.ArmController` written in JAX, and the same success, dense reward and potential
shaping as the task classes, jitted over a batch of envs with per-env auto-reset (Brax /
MuJoCo Playground style). Needs the ``mjx`` extra (``pip install 'vla-rft[mjx]'``).

Observation ``observation.state`` (float32): SimEnv's 14 proprioceptive entries (arm joints,
gripper closure, EE position, EE quaternion wxyz) followed by the task's object state, since
a state-based policy cannot see the cameras:

    reach_target  [14:17] target position                              (17,)
    push_cube     [14:17] cube position, [17:19] goal xy on the table   (19,)

Ported tasks: ``reach_target`` and ``push_cube`` (contact: fingers and table against a free
cube). ``press_button`` does not port: its cylinder caps against the finger boxes are a pair
MJX 3.3.7 does not collide (``NotImplementedError`` from ``mjx.put_model``); the grasping tasks
read contact lists for their success predicates, which this module does not port yet.

Differences from the C backend, all deliberate and measured (docs/mjx.md):

- **Resets** draw from the task's initial-state distribution with ``jax.random`` (the same
  ranges as ``initialize_episode``), so seed ``s`` gives a different episode than SimEnv's numpy
  reset with seed ``s``. :meth:`MjxTask.reset_to` starts from recorded C states instead (what
  the physics-agreement test does). The instruction is the task's first template with fixed
  colour names: the state carries what the policy needs.
- **Constraint solver**: CG instead of the model's Newton by default. Both minimize the same
  convex problem to the model's tolerance, and MJX's Newton path costs ~15x more per substep on
  XLA:CPU (1.3 ms against 0.09 ms per env, measured); ``solver="model"`` keeps Newton.
- **float32** (JAX's default) instead of float64.
- **Batching**: ``jax.vmap`` on accelerators; on CPU ``jax.lax.map`` (one env after another
  inside one compiled program), because XLA:CPU runs the vmapped MJX kinematics ~30x slower
  than the mapped one (218 ms against 7 ms for 256 envs, measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import mujoco
import numpy as np

from sims.arm import FINGER_TRAVEL, HOME_QPOS, WORKSPACE_HIGH, WORKSPACE_LOW, ArmController
from sims.external import import_optional
from sims.palette import TRAIN_COLORS
from sims.perturbations import NOMINAL_JOINT_NOISE, add_distractors
from sims.registry import get_task_class
from sims.scene import SUBSTEPS, Physics, SceneBuilder
from sims.tasks.push import CUBE_HALF, FINGER_HALF, PUSH_DIST
from vla_rft.contract import ACTION_POS_SCALE, ACTION_ROT_SCALE, STATE_KEY

MJX_HINT = "the MJX backend needs jax and mujoco-mjx: pip install 'vla-rft[mjx]'"
jax = import_optional("jax", MJX_HINT, "jax.numpy", "mujoco.mjx")
jnp = jax.numpy
from mujoco import mjx

PORTED_TASKS = ("reach_target", "push_cube")
REWARD_TYPES = ("dense", "sparse", "potential")
PROPRIO_DIM = 14


class EnvState(NamedTuple):
    """One env's state (a pytree; batched, every leaf gets a leading N axis)."""

    data: Any  # mjx.Data, kinematics current (as SimEnv's after refresh_kinematics)
    target_pos: jax.Array  # (3,) the controller's integrated EE target
    target_quat: jax.Array  # (4,) wxyz
    phi: jax.Array  # () the dense reward phi(s) of the current state (potential shaping)
    t: jax.Array  # () int32 control steps taken in this episode
    key: jax.Array  # (2,) uint32 this env's PRNG key (auto-resets draw from it)


class StepOut(NamedTuple):
    """One env's chunk step (batched: leading N axis)."""

    rewards: jax.Array  # (h,) float32, 0 after the episode ended
    executed: jax.Array  # (h,) bool prefix
    terminated: jax.Array  # () bool
    truncated: jax.Array  # () bool
    success: jax.Array  # () bool, on the last executed step
    final_state: jax.Array  # (S,) the last observation's state (meaningful where the episode ended)


# ------------------------------------------------------------------------ quaternion helpers (MuJoCo's)
def quat_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return jnp.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                      w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def mat_to_quat(mat: jax.Array) -> jax.Array:
    """``mju_mat2Quat`` (same branch order, so the same sign as the C observation)."""
    r = mat.reshape(9)
    tr = r[0] + r[4] + r[8]
    q_tr = jnp.stack([0.5 * jnp.sqrt(jnp.maximum(1 + tr, 1e-12)), r[7] - r[5], r[2] - r[6], r[3] - r[1]])
    q_x = jnp.stack([r[7] - r[5], 0.5 * jnp.sqrt(jnp.maximum(1 + r[0] - r[4] - r[8], 1e-12)), r[1] + r[3], r[2] + r[6]])
    q_y = jnp.stack([r[2] - r[6], r[1] + r[3], 0.5 * jnp.sqrt(jnp.maximum(1 - r[0] + r[4] - r[8], 1e-12)), r[5] + r[7]])
    q_z = jnp.stack([r[3] - r[1], r[2] + r[6], r[5] + r[7], 0.5 * jnp.sqrt(jnp.maximum(1 - r[0] - r[4] + r[8], 1e-12))])

    def scaled(q: jax.Array, i: int) -> jax.Array:  # the pivot entry stays, the others are 0.25 * (.) / pivot
        return jnp.where(jnp.arange(4) == i, q, 0.25 * q / q[i])

    q = jnp.where(tr > 0, scaled(q_tr, 0),
                  jnp.where((r[0] > r[4]) & (r[0] > r[8]), scaled(q_x, 1),
                            jnp.where(r[4] > r[8], scaled(q_y, 2), scaled(q_z, 3))))
    return q / jnp.linalg.norm(q)


def quat_to_vel(q: jax.Array) -> jax.Array:
    """``mju_quat2Vel(q, dt=1)``: the rotation vector of a unit quaternion (sign-invariant)."""
    axis = q[1:]
    sin_half = jnp.linalg.norm(axis)
    speed = 2 * jnp.arctan2(sin_half, q[0])
    speed = jnp.where(speed > jnp.pi, speed - 2 * jnp.pi, speed)
    return jnp.where(sin_half > 0, axis * speed / jnp.maximum(sin_half, 1e-12), 0.0)


def tolerance(distance: jax.Array, scale: float) -> jax.Array:
    """:func:`sims.task.tolerance`."""
    return 1.0 - jnp.tanh(distance / scale)


# ------------------------------------------------------------------------ tasks in JAX
@dataclass(frozen=True)
class _Layout:
    """Addresses in the compiled model (static numpy, baked into the compiled functions)."""

    arm_qpos: np.ndarray
    arm_dof: np.ndarray
    finger_qpos: np.ndarray
    arm_act: np.ndarray
    grip_act: int
    ee_site: int
    ee_body: int
    joint_lo: np.ndarray
    joint_hi: np.ndarray
    mocap: dict[str, int]  # task mocap bodies -> mocap index
    cube_qpos: int  # push_cube: the cube's free-joint qpos address (-1 otherwise)


def _layout(physics: Physics, controller: ArmController) -> _Layout:
    m, arm = physics.model, physics.arm
    mocap = {mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, b): int(m.body_mocapid[b])
             for b in range(m.nbody) if m.body_mocapid[b] >= 0}
    cube = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "cube_joint")
    return _Layout(arm.qpos, arm.dof, arm.finger_qpos, arm.arm_act, int(arm.grip_act), int(arm.ee_site),
                   int(m.site_bodyid[arm.ee_site]), controller._lo, controller._hi, mocap,
                   int(m.jnt_qposadr[cube]) if cube >= 0 else -1)


def _reach_sample(key: jax.Array, L: _Layout, qpos: jax.Array, mocap_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
    pos = jax.random.uniform(key, (3,), minval=jnp.array([0.30, -0.25, 0.05]), maxval=jnp.array([0.65, 0.25, 0.30]))
    return qpos, mocap_pos.at[L.mocap["target"]].set(pos)


def _push_sample(key: jax.Array, L: _Layout, qpos: jax.Array, mocap_pos: jax.Array) -> tuple[jax.Array, jax.Array]:
    k_xy, k_yaw, k_angle = jax.random.split(key, 3)
    xy = jax.random.uniform(k_xy, (2,), minval=jnp.array([0.38, -0.15]), maxval=jnp.array([0.52, 0.15]))
    yaw = jax.random.uniform(k_yaw, (), minval=-jnp.pi, maxval=jnp.pi)
    angle = jax.random.uniform(k_angle, (), minval=-2.0, maxval=2.0)  # away from the robot or sideways
    a = L.cube_qpos
    qpos = qpos.at[a:a + 3].set(jnp.array([xy[0], xy[1], CUBE_HALF]))
    qpos = qpos.at[a + 3:a + 7].set(jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)]))
    goal = xy + PUSH_DIST * jnp.array([jnp.cos(angle), jnp.sin(angle)])
    return qpos, mocap_pos.at[L.mocap["goal"]].set(jnp.array([goal[0], goal[1], 0.002]))


def _reach_eval(L: _Layout, d: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(success, dense, task observation) of reach_target."""
    target = d.mocap_pos[L.mocap["target"]]
    dist = jnp.linalg.norm(d.site_xpos[L.ee_site] - target)
    return dist < 0.025, tolerance(dist, 0.1), target


def _push_eval(L: _Layout, d: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(success, dense, task observation) of push_cube (PushCube.dense_reward and its push_start)."""
    cube = d.qpos[L.cube_qpos:L.cube_qpos + 3]
    goal_xy = d.mocap_pos[L.mocap["goal"], :2]
    distance = jnp.linalg.norm(cube[:2] - goal_xy)
    line = goal_xy - cube[:2]
    direction = line / jnp.maximum(jnp.linalg.norm(line), 1e-6)
    back = CUBE_HALF * (jnp.abs(direction[0]) + jnp.abs(direction[1])) + FINGER_HALF + 0.02
    start = cube - jnp.concatenate([direction, jnp.zeros(1)]) * back
    reach = 0.3 * tolerance(jnp.linalg.norm(d.site_xpos[L.ee_site] - start), 0.05)
    progress = jnp.clip(1.0 - distance / PUSH_DIST, 0.0, 1.0)
    return distance < 0.04, reach + 0.69 * progress, jnp.concatenate([cube, goal_xy])


_TASKS = {"reach_target": (_reach_sample, _reach_eval, 3), "push_cube": (_push_sample, _push_eval, 5)}


def check_task(task: str) -> None:
    """A :class:`UserInputError` unless ``task`` has an MJX port."""
    if task not in PORTED_TASKS:
        from vla_rft.errors import UserInputError

        raise UserInputError(f"task '{task}' has no MJX port; ported: {', '.join(PORTED_TASKS)} (docs/mjx.md)")


def task_state_dim(task: str) -> int:
    """The length of a ported task's ``observation.state`` (proprioception + object state)."""
    check_task(task)
    return PROPRIO_DIM + _TASKS[task][2]


def build_physics(task: str) -> Physics:
    """The task's C model exactly as :class:`sims.env.SimEnv` builds it (scene, task bodies, distractors)."""
    scene = SceneBuilder()
    get_task_class(task)().build(scene)
    add_distractors(scene)
    return Physics(scene.to_xml())


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (compiling a task takes ~1 min on CPU; a cached
    program loads in seconds, across processes). ``path`` defaults to ``$VLA_RFT_JAX_CACHE`` or
    ``~/.cache/vla_rft/jax``; ``VLA_RFT_JAX_CACHE=0`` leaves JAX's setting alone. Process-wide."""
    import os

    path = path or os.environ.get("VLA_RFT_JAX_CACHE") or os.path.expanduser("~/.cache/vla_rft/jax")
    if path == "0":
        return None
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", path)
    return jax.config.jax_compilation_cache_dir


def default_batching() -> str:
    """``map`` on CPU (XLA:CPU runs vmapped MJX slowly), ``vmap`` on accelerators."""
    return "map" if jax.default_backend() == "cpu" else "vmap"


class MjxTask:
    """A ported task's batched, jitted functions: ``reset``, ``reset_to`` and ``step_chunk``.

    Args:
        task: a name in :data:`PORTED_TASKS`.
        reward_type: ``dense``, ``sparse`` or ``potential`` (:func:`sims.env.step_reward`).
        potential_gamma: the discount the potential reward is shaped for.
        max_episode_steps: the time limit (default the task's own).
        terminate_on_success: end the episode when the task succeeds (SimEnv's default).
        solver: ``cg`` (default, see the module docstring) or ``model`` (the MJCF's Newton).
        batching: ``map`` (``jax.lax.map``), ``vmap``, or None for :func:`default_batching`.
    """

    def __init__(self, task: str, reward_type: str = "dense", potential_gamma: float = 0.99,
                 max_episode_steps: int | None = None, terminate_on_success: bool = True, solver: str = "cg",
                 batching: str | None = None) -> None:
        from sims.env import _check_choice, checked_gamma

        check_task(task)
        _check_choice("reward_type", reward_type, REWARD_TYPES)
        _check_choice("solver", solver, ("cg", "model"))
        self.batching = batching or default_batching()
        _check_choice("batching", self.batching, ("map", "vmap"))
        self.task, self.reward_type = task, reward_type
        self.gamma = checked_gamma(potential_gamma)
        self.max_episode_steps = int(max_episode_steps or get_task_class(task).max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.physics = build_physics(task)
        m = self.physics.model
        if solver == "cg":
            m.opt.solver = mujoco.mjtSolver.mjSOL_CG
        self.layout = _layout(self.physics, ArmController(m, self.physics.arm))
        self._sample, self._eval, _ = _TASKS[task]
        self.state_dim = task_state_dim(task)
        self.model = mjx.put_model(m)
        mujoco.mj_resetData(m, self.physics.data)
        self._template = mjx.put_data(m, self.physics.data)
        self._eye6 = jnp.eye(6) * ArmController.DAMPING ** 2
        self.reset = jax.jit(self._batched(self._reset_one))
        self.reset_to = jax.jit(self._batched(self._reset_to_one))
        self.step_chunk = jax.jit(self._batched(self._chunk_one))
        self.observe = jax.jit(self._batched(self._obs))

    # -- batching --
    def _batched(self, fn: Any) -> Any:
        if self.batching == "vmap":
            return jax.vmap(fn)
        return lambda *xs: jax.lax.map(lambda x: fn(*x), xs)

    # -- physics --
    def _refresh(self, d: Any) -> Any:
        """SimEnv's ``refresh_kinematics``: positions and com-based Jacobian inputs after stepping."""
        return mjx.com_pos(self.model, mjx.kinematics(self.model, d))

    def _ee_quat(self, d: Any) -> jax.Array:
        return mat_to_quat(d.site_xmat[self.layout.ee_site])

    def _controller(self, s: EnvState, a: jax.Array) -> EnvState:
        """:meth:`sims.arm.ArmController.apply` in JAX: one DLS IK step sets ``ctrl``."""
        L, d = self.layout, s.data
        ee_pos, ee_quat = d.site_xpos[L.ee_site], self._ee_quat(d)
        anchor = jnp.linalg.norm(s.target_pos - ee_pos) > ArmController.REANCHOR_DIST
        target_pos = jnp.where(anchor, ee_pos, s.target_pos)
        target_quat = jnp.where(anchor, ee_quat, s.target_quat)
        target_pos = jnp.clip(target_pos + a[:3] * ACTION_POS_SCALE, WORKSPACE_LOW, WORKSPACE_HIGH)
        rotvec = a[3:6] * ACTION_ROT_SCALE
        angle = jnp.linalg.norm(rotvec)
        axis = rotvec / jnp.maximum(angle, 1e-12)
        turn = jnp.concatenate([jnp.cos(angle / 2)[None], axis * jnp.sin(angle / 2)])
        turned = quat_mul(turn, target_quat)
        target_quat = jnp.where(angle > 1e-9, turned / jnp.linalg.norm(turned), target_quat)
        rot_err = quat_to_vel(quat_mul(target_quat, ee_quat * jnp.array([1.0, -1.0, -1.0, -1.0])))
        err = jnp.concatenate([target_pos - ee_pos, rot_err])
        jacp, jacr = mjx.jac(self.model, d, ee_pos, L.ee_body)  # (nv, 3) each
        jac = jnp.concatenate([jacp[L.arm_dof].T, jacr[L.arm_dof].T])  # (6, 6)
        dq = jac.T @ jnp.linalg.solve(jac @ jac.T + self._eye6, err)
        q = jnp.clip(d.qpos[L.arm_qpos] + dq, L.joint_lo, L.joint_hi)
        ctrl = d.ctrl.at[L.arm_act].set(q).at[L.grip_act].set((a[6] + 1.0) * 0.5 * FINGER_TRAVEL)
        return s._replace(data=d.replace(ctrl=ctrl), target_pos=target_pos, target_quat=target_quat)

    def _obs(self, s: EnvState) -> jax.Array:
        d, L = s.data, self.layout
        closure = d.qpos[L.finger_qpos].mean() / FINGER_TRAVEL
        _, _, task_obs = self._eval(L, d)
        return jnp.concatenate([d.qpos[L.arm_qpos], closure[None], d.site_xpos[L.ee_site], self._ee_quat(d),
                                task_obs]).astype(jnp.float32)

    def _start(self, d: Any, key: jax.Array) -> EnvState:
        """SimEnv.reset's tail: forward, anchor the controller, hold the joints, gripper open."""
        d = mjx.forward(self.model, d)
        L = self.layout
        d = d.replace(ctrl=d.ctrl.at[L.arm_act].set(d.qpos[L.arm_qpos]).at[L.grip_act].set(0.0))
        success, dense, _ = self._eval(L, d)
        return EnvState(d, d.site_xpos[L.ee_site], self._ee_quat(d), jnp.where(success, 1.0, dense),
                        jnp.zeros((), jnp.int32), key)

    def _reset_one(self, key: jax.Array) -> EnvState:
        key, k_arm, k_task = jax.random.split(key, 3)
        t = self._template
        noise = jax.random.uniform(k_arm, (6,), minval=-NOMINAL_JOINT_NOISE, maxval=NOMINAL_JOINT_NOISE)
        qpos = t.qpos.at[self.layout.arm_qpos].set(jnp.asarray(HOME_QPOS) + noise)
        qpos, mocap_pos = self._sample(k_task, self.layout, qpos, t.mocap_pos)
        return self._start(t.replace(qpos=qpos, mocap_pos=mocap_pos), key)

    def _reset_to_one(self, qpos: jax.Array, mocap_pos: jax.Array, mocap_quat: jax.Array, key: jax.Array
                      ) -> EnvState:
        """Start from a recorded state (a C env's reset: qpos, mocap poses; qvel is 0 there)."""
        t = self._template
        return self._start(t.replace(qpos=qpos, mocap_pos=mocap_pos, mocap_quat=mocap_quat), key)

    def _env_step(self, s: EnvState, a: jax.Array) -> tuple[EnvState, jax.Array, jax.Array]:
        """One control step: (next state, reward, success)."""
        s = self._controller(s, jnp.clip(a, -1.0, 1.0))
        d = jax.lax.fori_loop(0, SUBSTEPS, lambda _, x: mjx.step(self.model, x), s.data)
        d = self._refresh(d)
        success, dense, _ = self._eval(self.layout, d)
        dense = jnp.where(success, 1.0, dense)
        if self.reward_type == "dense":
            reward = dense
        elif self.reward_type == "sparse":
            reward = success.astype(jnp.float32)
        else:
            reward = self.gamma * dense - s.phi + success
        return s._replace(data=d, phi=dense, t=s.t + 1), reward, success

    def _chunk_one(self, s: EnvState, chunk: jax.Array) -> tuple[EnvState, StepOut]:
        """Execute a (h, A) chunk until it or the episode ends, then auto-reset an ended episode."""

        def body(carry: tuple[EnvState, jax.Array], a: jax.Array) -> tuple[tuple[EnvState, jax.Array], Any]:
            state, ended = carry

            def live(st: EnvState) -> tuple[EnvState, jax.Array, jax.Array]:
                return self._env_step(st, a)

            def idle(st: EnvState) -> tuple[EnvState, jax.Array, jax.Array]:
                return st, jnp.zeros((), jnp.float32), jnp.zeros((), bool)

            nxt, reward, success = jax.lax.cond(ended, idle, live, state)  # a select under vmap
            term = ~ended & success & self.terminate_on_success
            trunc = ~ended & ~term & (nxt.t >= self.max_episode_steps)
            out = (jnp.where(ended, 0.0, reward).astype(jnp.float32), ~ended, term, trunc, success)
            return (nxt, ended | term | trunc), out

        (s, ended), (rewards, executed, term, trunc, success) = jax.lax.scan(body, (s, jnp.zeros((), bool)), chunk)
        last = jnp.maximum(executed.sum() - 1, 0)
        final_state = self._obs(s)
        key, k_reset = jax.random.split(s.key)
        fresh = self._reset_one(k_reset)
        s = jax.tree_util.tree_map(lambda new, old: jnp.where(ended, new, old), fresh, s._replace(key=key))
        return s, StepOut(rewards, executed, term.any(), trunc.any(), success[last], final_state)


def instruction(task: str) -> str:
    """The state-based task's instruction: its first template, colour fields filled in order."""
    colors = sorted(TRAIN_COLORS)
    return get_task_class(task).templates[0].format(color=colors[0], goal=colors[1], other=colors[1])


def c_reset_states(task: str, seeds: list[int]) -> dict[str, np.ndarray]:
    """SimEnv's reset states for ``seeds`` (qpos, mocap_pos, mocap_quat, float32 batches), for
    :meth:`MjxTask.reset_to`: the C and MJX backends then start from the same states."""
    from sims.env import SimEnv

    env = SimEnv(task, obs_mode="state")
    rows = []
    for seed in seeds:
        env.reset(seed=int(seed))
        d = env.physics.data
        rows.append((d.qpos.copy(), d.mocap_pos.copy(), d.mocap_quat.copy()))
    env.close()
    return {k: np.stack([r[i] for r in rows]).astype(np.float32)
            for i, k in enumerate(("qpos", "mocap_pos", "mocap_quat"))}


def _c_task_obs(env: Any) -> np.ndarray:
    """The MJX observation's object-state entries, read from a C env's privileged state."""
    priv = env.privileged_state()
    return priv["target"] if "target" in priv else np.concatenate([priv["cube"], priv["goal"][:2]])


def c_expert_actions(task: str, seeds: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    """The scripted expert's actions (N, steps, 7) from each seed's C reset (zeros after the
    episode ends), and the step each C episode succeeded on (-1 if it did not)."""
    from sims.env import SimEnv

    actions, success_at = np.zeros((len(seeds), steps, 7), np.float32), []
    for i, seed in enumerate(seeds):
        env = SimEnv(task, obs_mode="state")
        env.reset(seed=int(seed))
        expert, done_at = env.task.make_expert(), -1
        for t in range(steps):
            actions[i, t] = expert(env.privileged_state())
            if env.step(actions[i, t])[2]:
                done_at = t
                break
        success_at.append(done_at)
        env.close()
    return actions, success_at


def c_agreement(mt: MjxTask, seeds: list[int], actions: np.ndarray, chunk: int) -> dict[str, Any]:
    """Step C envs (``SimEnv`` reset with ``seeds``) and ``mt`` (``reset_to`` their states) with
    the same ``actions`` (N, T, 7), ``chunk`` actions per MJX call (``mt.step_chunk`` compiled
    for it). At every chunk end, while neither backend's episode has ended: the worst joint
    error (rad), EE position error (m) and object-state error (m) over the envs; and which
    envs succeeded in each backend."""
    from sims.env import SimEnv

    n, steps = actions.shape[:2]
    envs = [SimEnv(mt.task, obs_mode="state", terminate_on_success=mt.terminate_on_success,
                   reward_type=mt.reward_type) for _ in seeds]
    for env, seed in zip(envs, seeds, strict=True):
        env.reset(seed=int(seed))
    st = c_reset_states(mt.task, seeds)
    keys = jax.vmap(jax.random.PRNGKey)(np.asarray(seeds, np.uint32))
    s = mt.reset_to(st["qpos"], st["mocap_pos"], st["mocap_quat"], keys)
    alive, c_success, m_success = np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    errors: dict[str, list[float]] = {"joint": [], "ee": [], "object": []}
    for k in range(0, steps, chunk):
        s, out = mt.step_chunk(s, jax.device_put(actions[:, k:k + chunk], jax.devices()[0]))  # as MjxSource places it
        m = np.asarray(mt.observe(s))
        m_success |= np.asarray(out.success) & alive
        c = np.zeros_like(m)
        for i, env in enumerate(envs):
            for a in actions[i, k:k + chunk] if alive[i] else ():
                _, _, term, trunc, info = env.step(a)
                c_success[i] |= bool(info["is_success"])
                if term or trunc:
                    alive[i] = False
                    break
            c[i] = np.concatenate([env._observation()[STATE_KEY], _c_task_obs(env)])
        alive &= ~np.asarray(out.terminated | out.truncated)
        if not alive.any():
            break
        rows = np.flatnonzero(alive)
        errors["joint"].append(float(np.abs(m[rows, :6] - c[rows, :6]).max()))
        errors["ee"].append(float(np.linalg.norm(m[rows, 7:10] - c[rows, 7:10], axis=1).max()))
        errors["object"].append(float(np.abs(m[rows, 14:] - c[rows, 14:]).max()))
    for env in envs:
        env.close()
    return {**{k: np.asarray(v) for k, v in errors.items()}, "c_success": c_success, "mjx_success": m_success}


__all__ = [
    "MJX_HINT",
    "PORTED_TASKS",
    "EnvState",
    "MjxTask",
    "StepOut",
    "c_agreement",
    "c_expert_actions",
    "c_reset_states",
    "check_task",
    "default_batching",
    "enable_compilation_cache",
    "instruction",
    "task_state_dim",
]
