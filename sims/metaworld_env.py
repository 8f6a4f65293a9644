"""Meta-World MT10 tasks (Sawyer arm) behind the project's observation/action contract.

The ten MT10 environments of Meta-World 3 (``reach-v3``, ``push-v3``, ...) join the suite as
``metaworld_reach``, ``metaworld_push``, ... (family ``metaworld``), each with language
instructions. Their task classes are registered at ``import sims`` time without importing
metaworld (an optional extra); only building an env (:class:`MetaWorldEnv`) needs it, and says
how to install it when it is missing. Experts are Meta-World's own scripted policies.

Goals are sampled per episode from the env's seeded generator (Meta-World's MT1/MT10 sample
them from 50 fixed goals per task; here every seed gives a fresh one, the way Meta-World builds
those lists). The goal is observable, as in the MT benchmarks.

Observation: ``observation.images.front`` (Meta-World's ``corner3`` camera) and
``observation.images.wrist`` (``gripperPOV``), uint8 upright; ``observation.state`` float32
(39,), Meta-World's own observation:

    [0:3]    hand position (m)          [3]      gripper opening, 0 closed .. 1 open
    [4:11]   first object pos + quat    [11:18]  second object pos + quat (zeros if none)
    [18:36]  [0:18] of the previous Meta-World step   [36:39] goal position

Action: the contract's 7-dim end-effector delta (see :mod:`vla_rft.contract`) in Meta-World's
own units. Its arm is mocap-driven with a fixed downward gripper, so the rotation entries [3:6]
are accepted and ignored; [0:3] is Meta-World's hand action (0.01 m per Meta-World step per
unit), held for the ``SUBSTEPS`` = 4 Meta-World steps (12.5 ms each) of one control step, so one
unit moves the hand 0.04 m per control step (twice the suite's ``ACTION_POS_SCALE``: at the
suite's scale Meta-World's scripted policies, which move at its full speed, fail peg-insert-side
by pushing the peg over while their gripper closes on the way down; measured, docs/tasks.md);
[6] is Meta-World's gripper effort (-1 open, +1 closed, as in the contract). Control runs at
20 Hz, where the scripted policies solve the ten tasks with the action held. Episodes last
``max_episode_steps`` = 125 control steps, Meta-World's own 500-step horizon.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from sims.env import _fast_renderer
from sims.external import ExternalSuiteEnv, import_optional
from sims.registry import register_task
from vla_rft.contract import ARM_ACTION_DIM, IMAGE_PREFIX, STATE_KEY, TASK_KEY

STATE_DIM = 39
SUBSTEPS = 4  # Meta-World steps (frame_skip 5 x 2.5 ms) per control step: 20 Hz
CAMERA_MAP = {"front": "corner3", "wrist": "gripperPOV"}
INSTALL_HINT = (
    "Meta-World tasks need metaworld, which is not installed: run "
    "`pip install --no-deps metaworld==3.1.1 && pip install 'vla-rft[metaworld]'` (it pins "
    "mujoco==3.3.0, and 3.3.7 runs it; what scripts/install.sh does, see docs/install.md)"
)


def import_metaworld() -> Any:
    """``import metaworld`` (with its env lists and policies), or an error naming the extra."""
    return import_optional("metaworld", INSTALL_HINT, "metaworld.env_dict", "metaworld.policies")


class MetaWorldTask:
    """A Meta-World MT10 environment as a task of the suite (class attributes need no metaworld)."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "metaworld"
    env_name: ClassVar[str] = ""  # Meta-World's name, e.g. "reach-v3"
    templates: ClassVar[tuple[str, ...]] = ()
    heldout_templates: ClassVar[tuple[str, ...]] = ()
    max_episode_steps: ClassVar[int] = 125
    entry_point: ClassVar[str] = "sims.metaworld_env:MetaWorldEnv"
    state_dim: ClassVar[int] = STATE_DIM


class MetaWorldExpert:
    """Meta-World's scripted policy for a task, as a contract expert: ``expert(priv) -> action``
    (its 4-dim action in the contract's layout, held for the control step)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def __call__(self, priv: dict[str, np.ndarray]) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, as intended
            warnings.simplefilter("ignore", UserWarning)
            mw = np.asarray(self.policy.get_action(priv["mw_obs"]), dtype=np.float64)
        action = np.zeros(ARM_ACTION_DIM, dtype=np.float32)
        action[:3] = mw[:3]
        action[6] = mw[3]
        return np.clip(action, -1.0, 1.0)


def _mt10(suffix: str, env_name: str, templates: tuple[str, ...], heldout: tuple[str, ...]) -> None:
    cls = type(f"MetaWorld{''.join(p.capitalize() for p in suffix.split('_'))}", (MetaWorldTask,), {
        "env_name": env_name, "templates": templates, "heldout_templates": heldout,
        "__doc__": f"Meta-World {env_name}: {templates[0]}.", "__module__": __name__,
    })
    register_task(f"metaworld_{suffix}")(cls)


# MT10, with Meta-World's task descriptions as the first instruction of each.
_mt10("reach", "reach-v3", ("reach the goal position", "move the gripper to the goal", "reach to the target"),
      ("bring the hand to the target point", "go to the goal spot"))
_mt10("push", "push-v3", ("push the puck to the goal", "slide the puck to the target", "push the puck to the goal position"),
      ("shove the disc to the target", "nudge the puck onto the goal"))
_mt10("pick_place", "pick-place-v3", ("pick up the puck and place it at the goal", "put the puck at the goal position",
                                      "grasp the puck and move it to the target"),
      ("lift the disc and set it on the target", "carry the puck to the goal"))
_mt10("door_open", "door-open-v3", ("open the door", "pull the door open", "swing the door open with its handle"),
      ("get the door open", "open up the door by pulling it"))
_mt10("drawer_open", "drawer-open-v3", ("open the drawer", "pull the drawer open", "slide the drawer out"),
      ("draw the drawer out", "pull out the drawer"))
_mt10("drawer_close", "drawer-close-v3", ("close the drawer", "push the drawer closed", "slide the drawer shut"),
      ("shut the drawer", "push in the drawer"))
_mt10("button_press_topdown", "button-press-topdown-v3", ("press the button from the top", "push the button down",
                                                          "press down on the button"),
      ("hit the button from above", "push down the button top"))
_mt10("peg_insert_side", "peg-insert-side-v3", ("insert the peg into the hole from the side", "put the peg in the hole",
                                                "slide the peg sideways into the hole"),
      ("fit the peg into the side hole", "push the peg into the slot"))
_mt10("window_open", "window-open-v3", ("slide the window open", "open the window", "push the window open to the side"),
      ("slide the window to open it", "get the window open"))
_mt10("window_close", "window-close-v3", ("slide the window closed", "close the window", "push the window shut"),
      ("slide the window to close it", "shut the window"))


class MetaWorldEnv(ExternalSuiteEnv):
    """A Meta-World MT10 task as a gymnasium env in the contract (the kwargs of :class:`SimEnv`,
    see :class:`sims.external.ExternalSuiteEnv`); ``"dense"`` is Meta-World's v2 shaped reward
    divided by its maximum of 10."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}
    camera_map = CAMERA_MAP
    task_base = MetaWorldTask
    state_dim = STATE_DIM

    def __init__(self, task: str, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        metaworld = import_metaworld()
        env_dict, name = metaworld.env_dict, self.task.env_name
        mw = env_dict.ALL_V3_ENVIRONMENTS[name]()
        # What Meta-World's own benchmark builders do, with the goal resampled at every reset
        # from the env's seeded generator instead of picked from a fixed list of 50.
        mw._freeze_rand_vec = False
        mw.seeded_rand_vec = True
        mw._set_task_called = True
        task_kwargs = dict(env_dict.MT10_V3_ARGS_KWARGS[name]["kwargs"])
        task_kwargs.pop("task_id", None)
        mw._set_task_inner(**task_kwargs)
        mw._partially_observable = False  # the MT benchmarks' goal-observable setting
        mw.__dict__.pop("sawyer_observation_space", None)  # a cached_property of the old setting
        mw.max_path_length = 2**31  # the gymnasium TimeLimit truncates, in control steps
        self._mw = mw
        self._policy_cls = metaworld.policies.ENV_POLICY_MAP[name]
        self._renderers: dict[str, Any] = {}
        self._mw_obs = np.zeros(STATE_DIM)

    # -- gymnasium API --
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._mw.seed(int(self.np_random.integers(2**31)))  # the goal / object sampler
        self._mw_obs, _ = self._mw.reset()
        shaped = self._mw.evaluate_state(self._mw_obs, np.zeros(4))[0] / 10.0
        info = self._begin_episode(float(np.clip(shaped, 0.0, 1.0)))  # phi of the first state
        return self._observation(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        a = self._checked(action)
        mw_action = np.append(a[:3], a[6])
        success, shaped = False, 0.0
        for _ in range(SUBSTEPS):
            self._mw_obs, shaped, _, _, info = self._mw.step(mw_action)
            success = success or bool(info["success"])
        return self._end_step(success, float(shaped) / 10.0)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._image("front")

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._mw.close()

    # -- public helpers --
    def privileged_state(self) -> dict[str, np.ndarray]:
        """Ground truth for experts: Meta-World's raw observation, hand, goal and step count."""
        obs = self._mw_obs
        return {"mw_obs": obs.copy(), "ee_pos": obs[0:3].copy(), "obj": obs[4:7].copy(),
                "goal": obs[36:39].copy(), "step": np.array(self.elapsed_steps)}

    def make_expert(self) -> MetaWorldExpert:
        """Meta-World's own scripted policy for this task, as a contract expert."""
        return MetaWorldExpert(self._policy_cls())

    # -- internals --
    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {STATE_KEY: self._mw_obs.astype(np.float32), TASK_KEY: self.instruction}
        if self.obs_mode == "rgb":
            obs.update({IMAGE_PREFIX + cam: self._image(cam) for cam in self.cameras})
        return obs

    def _image(self, cam: str) -> np.ndarray:
        renderer = self._renderers.get(cam)
        if renderer is None:
            renderer = self._renderers[cam] = _fast_renderer(self._mw.model, self.image_size)
        renderer.update_scene(self._mw.data, camera=CAMERA_MAP[cam])
        return renderer.render()
