"""Deployment to real arms: robot interface, safety filter, chunk executor, policy server/client,
and a rosbridge client. Imports numpy, pyyaml, websockets, msgpack and ``vla_rft.contract`` only;
never torch, mujoco or the training stack (a robot computer may have none of them).
"""

from robots.base import (
    STAMP_KEY,
    ObservationUnavailable,
    Robot,
    RobotConfig,
    RobotError,
    RobotLimits,
    StateLayout,
    available_robots,
    load_robot_config,
    make_robot,
    register_robot,
)
from robots.config import ConfigError
from robots.executor import ChunkExecutor, ExecutorConfig, StepRecord
from robots.safety import FilterResult, SafetyConfig, SafetyEvent, SafetyFilter

__all__ = [
    "STAMP_KEY", "ChunkExecutor", "ConfigError", "ExecutorConfig", "FilterResult",
    "ObservationUnavailable", "Robot", "RobotConfig", "RobotError", "RobotLimits", "SafetyConfig",
    "SafetyEvent", "SafetyFilter", "StateLayout", "StepRecord", "available_robots",
    "load_robot_config", "make_robot", "register_robot",
]
