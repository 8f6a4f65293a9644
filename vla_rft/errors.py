"""Errors that mean "the user's input is wrong": the CLI prints them as one line, exit status 2.

Only the project's own error types are user errors. A plain ``ValueError``/``TypeError`` raised
somewhere deep in the code is a bug, and the CLI lets it surface as a normal traceback.
"""

from __future__ import annotations

from robots.config import ConfigError as RobotConfigError
from vla_rft.checkpoint import CheckpointError
from vla_rft.config import ConfigError
from vla_rft.contract import ContractError


class UserInputError(ValueError):
    """Generic bad input (a path that does not exist, an option out of range, ...).

    Raised by ``vla_rft`` and by ``sims`` (an unknown task, camera or perturbation name). The robot
    side (``robots/``) does not import this module; its bad-config error is
    :class:`robots.config.ConfigError`, also a user error.
    """


class UsageError(UserInputError):
    """The command line names no known command (raised by :mod:`vla_rft.cli`).

    Defined here, not in ``vla_rft.cli``: run as ``python -m vla_rft.cli`` that module is
    ``__main__``, and a class defined there would not be the one ``USER_ERRORS`` lists.
    """


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserInputError,
    ConfigError,
    RobotConfigError,
    CheckpointError,
    ContractError,
    FileExistsError,
    FileNotFoundError,
    UsageError,
)
