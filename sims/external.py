"""What every external suite's env shares (robosuite, Meta-World): argument checks, the step
bookkeeping (counters, clipping, the reward of each ``reward_type``, success termination, ``info``)
and the :class:`SimEnv` parity methods. A suite's env builds its simulator in ``__init__`` after
:meth:`ExternalSuiteEnv._setup`, and implements ``reset``, ``step``, ``render``, ``close``,
``privileged_state`` and ``_observation``."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sims.env import (
    REWARD_TYPES,
    _check_choice,
    checked_action,
    checked_gamma,
    observation_space,
    step_info,
    step_reward,
)
from sims.registry import get_task_class
from vla_rft.contract import ARM_ACTION_DIM


def import_optional(name: str, hint: str, *submodules: str) -> Any:
    """``import name`` (and ``submodules``), or a :class:`UserInputError` saying ``hint`` (which
    names the extra to install) when the optional library is missing."""
    try:
        module = importlib.import_module(name)
        for sub in submodules:
            importlib.import_module(sub)
    except ImportError as exc:
        from vla_rft.errors import UserInputError

        raise UserInputError(hint) from exc
    return module


class ExternalSuiteEnv(gym.Env[dict[str, Any], np.ndarray]):
    """A task of an external suite as a gymnasium env in the contract (the kwargs of :class:`SimEnv`).

    Args:
        task: a registered task name of the suite.
        obs_mode: ``"rgb"`` renders the chosen cameras; ``"state"`` renders nothing (fast).
        cameras: cameras to render in ``"rgb"`` mode, a subset of ``("front", "wrist")``.
        image_size: square image side in pixels.
        perturbation: only ``"none"``: the perturbation levels exist for the built-in scenes.
        reward_type: ``"sparse"`` (1 on success), ``"dense"`` (the suite's shaped reward in
            [0, 1]; 1 on success) or ``"potential"`` (the success plus
            ``potential_gamma * phi(s') - phi(s)`` with phi the dense reward, as :class:`SimEnv`).
        potential_gamma: the discount of the agent the potential reward is shaped for.
        terminate_on_success: end the episode (``terminated=True``) when the task succeeds.
        render_mode: ``"rgb_array"`` makes :meth:`render` return the front camera image.
    """

    camera_map: ClassVar[dict[str, str]] = {}  # our camera names -> the suite's
    task_base: ClassVar[type] = object  # the suite's task class
    state_dim: ClassVar[int] = 0

    def __init__(
        self,
        task: str,
        obs_mode: str = "rgb",
        cameras: list[str] | tuple[str, ...] | None = None,
        image_size: int = 64,
        perturbation: str = "none",
        reward_type: str = "dense",
        potential_gamma: float = 0.99,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
    ) -> None:
        _check_choice("obs_mode", obs_mode, ("rgb", "state"))
        _check_choice("reward_type", reward_type, REWARD_TYPES)
        _check_choice("perturbation", perturbation, ("none",))
        self.cameras = tuple(self.camera_map if cameras is None else cameras)
        for cam in self.cameras:
            _check_choice("camera", cam, tuple(self.camera_map))
        cls = get_task_class(task)
        if not issubclass(cls, self.task_base):
            raise TypeError(f"'{task}' is not a {type(self).__name__} task; use sims.make_env('{task}')")
        self.task = cls()
        self.obs_mode = obs_mode
        self.image_size = int(image_size)
        self.reward_type = reward_type
        self.potential_gamma = checked_gamma(potential_gamma)
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.observation_space = observation_space(self.state_dim, self.cameras if obs_mode == "rgb" else (),
                                                   self.image_size)
        self.action_space = spaces.Box(-1.0, 1.0, (ARM_ACTION_DIM,), dtype=np.float32)
        self.instruction = ""
        self.elapsed_steps = 0
        self._clipped_total = 0
        self._clipped = 0
        self._phi = 0.0
        self.lazy_frames = False
        self.episode_limit: int | None = None  # the TimeLimit's steps; sims.make_env sets it

    # -- shared step bookkeeping --
    def _begin_episode(self, phi: float) -> dict[str, Any]:
        """Counters, the instruction and phi(s_0) of a new episode (after the suite's reset); its info."""
        templates = self.task.templates
        self.instruction = templates[int(self.np_random.integers(len(templates)))]
        self.elapsed_steps = 0
        self._clipped_total = 0
        self._phi = float(phi)
        return self._info(0)

    def _checked(self, action: np.ndarray) -> np.ndarray:
        """The contract action clipped to [-1, 1] (counted), or a ``ContractError``."""
        a, self._clipped = checked_action(action)
        self._clipped_total += self._clipped
        return a

    def _end_step(self, success: bool, shaped: float) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """The step's return once the suite has stepped: ``shaped`` is its dense reward in [0, 1]."""
        self.elapsed_steps += 1
        dense = 1.0 if success else float(np.clip(shaped, 0.0, 1.0))
        reward = step_reward(self.reward_type, dense, success, self._phi, self.potential_gamma)
        self._phi = dense
        terminated = success and self.terminate_on_success
        return self._observation(), reward, terminated, False, self._info(self._clipped, success=success, dense=dense)

    def _info(self, clipped: int, success: bool = False, dense: float = 0.0) -> dict[str, Any]:
        return step_info(self.task.name, clipped, self._clipped_total, self.elapsed_steps, success, dense)

    def _observation(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- SimEnv parity --
    @property
    def max_episode_steps(self) -> int:
        return self.task.max_episode_steps

    def set_lazy_frames(self, on: bool) -> None:
        """Accepted for :class:`SimEnv` parity; every step renders."""
        self.lazy_frames = bool(on)

    def request_frames(self) -> None:
        """A no-op: every step renders (see :meth:`set_lazy_frames`)."""
