"""The deploy loop: a fixed-rate control loop that runs a policy on a robot and logs every episode.

One control period: read an observation, let the :class:`~robots.executor.ChunkExecutor` pick an
action (the policy's, or an operator's when a :class:`Teleop` source intervenes), pass it through
the :class:`~robots.safety.SafetyFilter`, command or hold, and append one LeRobotDataset frame.

The loop is split by concern; this module resolves the policy to run and re-exports the rest, so
``from robots.deploy import ...`` reaches every piece:

- :mod:`robots.timing`: :class:`RateLoop` (sleep-until-deadline scheduling), :class:`LoopStats`;
- :mod:`robots.teleop`: operator sources (:class:`NoTeleop`, :class:`ScriptedTeleop`,
  :class:`KeyboardTeleop`, :class:`RosTeleop`);
- :mod:`robots.outcome`: reward/success sources (:class:`RobotOutcome`, :class:`TopicOutcome`,
  :class:`OperatorOutcome`, :class:`FixedOutcome`);
- :mod:`robots.dataset_log`: the frame fields, :class:`DeployDataset` (one finalized LeRobotDataset
  episode at a time, plus the ``meta/deploy_episodes.jsonl`` sidecar), :func:`read_deploy_episodes`;
- :mod:`robots.episode`: :class:`EpisodeRunner`, :class:`DeploySettings`, :class:`EpisodeResult`,
  :class:`GuardedRobot`, :func:`hold_action`, :func:`wait_for_observation`;
- here: :func:`resolve_policy` (``scripted:*``, ``ws://``, a checkpoint) and :class:`GotoPolicy`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robots.base import Robot
from robots.dataset_log import (
    DEPLOY_FEATURE_KEYS,
    EVENT_KINDS,
    DeployDataset,
    _frame_obs,
    deploy_features,
    event_flags,
    read_deploy_episodes,
)
from robots.episode import (
    DeploySettings,
    EpisodeResult,
    EpisodeRunner,
    GuardedRobot,
    hold_action,
    wait_for_observation,
)
from robots.outcome import FixedOutcome, OperatorOutcome, OutcomeSource, RobotOutcome, TopicOutcome
from robots.teleop import (
    ExpertSupervisor,
    KeyboardTeleop,
    NoTeleop,
    RosTeleop,
    ScriptedTeleop,
    Teleop,
)
from robots.timing import LoopStats, RateLoop, percentile
from vla_rft.contract import STATE_KEY

__all__ = [
    "DEPLOY_FEATURE_KEYS", "EVENT_KINDS", "DeployDataset", "DeploySettings", "EpisodeResult",
    "EpisodeRunner", "ExpertSupervisor", "FixedOutcome", "GotoPolicy", "GuardedRobot", "KeyboardTeleop", "LoopStats",
    "NoTeleop", "OperatorOutcome", "OutcomeSource", "RateLoop", "ResolvedPolicy", "RobotOutcome",
    "RosTeleop", "ScriptedTeleop", "Teleop", "TopicOutcome", "deploy_features", "event_flags",
    "hold_action", "percentile", "read_deploy_episodes", "resolve_policy", "wait_for_observation",
]


# ---------------------------------------------------------------------- policies
@dataclass
class ResolvedPolicy:
    """A chunk policy ready for the executor, what it is, and how to release it."""

    infer: Callable[[dict[str, Any]], np.ndarray]
    name: str
    chunk_size: int
    close: Callable[[], None] = lambda: None


class GotoPolicy:
    """Scripted joint-space policy: straight to ``goal`` at a fraction of the velocity limits.

    Bring-up and end-to-end tests use it on ``joint_position`` robots: it needs no model, and
    its target is known, so a test can check the arm arrived.
    """

    def __init__(self, goal: list[float], robot: Robot, chunk_size: int = 5, speed_fraction: float = 0.5,
                 hz: float | None = None) -> None:
        lim = robot.limits
        if lim.action_space != "joint_position":
            raise ValueError("scripted:goto needs a joint_position robot")
        n = lim.n_joints
        if len(goal) not in (n, n + int(lim.has_gripper)):
            raise ValueError(f"scripted:goto needs {n} joint values (+ gripper), got {len(goal)}")
        self.goal = np.clip(np.asarray(goal[:n], float), lim.joint_pos_min, lim.joint_pos_max)
        self.gripper = float(goal[n]) if len(goal) > n else lim.gripper_min
        self.layout, self.has_gripper = robot.state_layout, lim.has_gripper
        self.max_step = np.asarray(lim.joint_vel_max) * speed_fraction / (hz or robot.config.control_hz)
        self.chunk_size = chunk_size

    def __call__(self, obs: dict[str, Any]) -> np.ndarray:
        q = np.asarray(self.layout.joints(np.asarray(obs[STATE_KEY], float)), float)
        rows = []
        for _ in range(self.chunk_size):
            q = q + np.clip(self.goal - q, -self.max_step, self.max_step)
            rows.append(np.concatenate([q, [self.gripper] if self.has_gripper else []]))
        return np.asarray(rows, np.float32)


def resolve_policy(spec: str, robot: Robot, obs: dict[str, Any], *, token: str | None = None,
                   loader: str | None = None, hz: float | None = None,
                   timeout_s: float = 5.0) -> ResolvedPolicy:
    """``scripted:expert`` | ``scripted:goto:J1,..`` | ``scripted:zero|hold`` | ``ws://HOST:PORT`` | a
    checkpoint path, as a chunk policy for ``robot`` (whose first observation is ``obs``)."""
    if spec == "scripted:expert":
        make = getattr(robot, "make_expert", None)
        if make is None:
            raise ValueError(f"scripted:expert needs a simulated robot with a task expert, not kind "
                             f"'{robot.config.kind}'")
        expert = make()
        return ResolvedPolicy(lambda o: np.asarray(expert(o), np.float32)[None], spec, 1)
    if spec.startswith("scripted:goto:"):
        try:
            goal = [float(x) for x in spec.removeprefix("scripted:goto:").split(",")]
        except ValueError as exc:
            raise ValueError(f"scripted:goto:J1,J2,... needs numbers: {spec!r}") from exc
        goto = GotoPolicy(goal, robot, hz=hz)
        return ResolvedPolicy(goto, "scripted:goto", goto.chunk_size)
    if spec.startswith("ws://"):
        return _remote_policy(spec, robot, token, timeout_s)
    return _local_policy(spec, robot, obs, loader)


def _remote_policy(url: str, robot: Robot, token: str | None, timeout_s: float) -> ResolvedPolicy:
    from robots.client import PolicyClient
    from robots.server import TOKEN_ENV

    host, sep, port = url.removeprefix("ws://").rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"policy URL must be ws://HOST:PORT, got {url!r}")
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(f"a policy server needs a token: pass --token or set ${TOKEN_ENV}")
    client = PolicyClient(host, int(port), token, timeout_s=timeout_s)
    meta = client.connect()
    _check_policy_fits(meta.action_dim, meta.action_space, robot, meta.name)
    return ResolvedPolicy(client.infer, meta.name, meta.chunk_size, client.close)


def _local_policy(spec: str, robot: Robot, obs: dict[str, Any], loader: str | None) -> ResolvedPolicy:
    from robots.policy import load_policy

    lim = robot.limits
    options = {"action_dim": lim.action_dim, "state_dim": int(np.asarray(obs[STATE_KEY]).shape[0]),
               "action_space": lim.action_space, "cameras": list(robot.config.cameras)}
    policy = load_policy(spec, options, loader)
    meta = policy.metadata
    _check_policy_fits(meta.action_dim, meta.action_space, robot, meta.name)

    def infer(o: dict[str, Any]) -> np.ndarray:
        batch = {k: np.asarray(v)[None] for k, v in _frame_obs(o).items() if k != "task"}
        batch["task"] = [str(o.get("task", ""))]
        return np.asarray(policy.act(batch), np.float32)[0]

    return ResolvedPolicy(infer, meta.name, meta.chunk_size)


def _check_policy_fits(action_dim: int, action_space: str, robot: Robot, name: str) -> None:
    lim = robot.limits
    if action_dim != lim.action_dim or action_space != lim.action_space:
        raise ValueError(f"policy '{name}' emits {action_space} actions of size {action_dim}; robot "
                         f"'{robot.config.name}' takes {lim.action_space} of size {lim.action_dim}")
