"""Errors that mean "the user's input is wrong": the CLI prints them as one line, exit status 2."""

from __future__ import annotations

from vla_rft.checkpoint import CheckpointError
from vla_rft.config import ConfigError
from vla_rft.contract import ContractError


class UserInputError(ValueError):
    """Generic bad input (a path that does not exist, an option out of range, ...)."""


def _usage_error() -> type[Exception]:
    from vla_rft.cli import UsageError

    return UsageError


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserInputError,
    ConfigError,
    CheckpointError,
    ContractError,
    FileExistsError,
    FileNotFoundError,
    _usage_error(),
    ValueError,
)
