"""The task registry: ``@register_task("name")`` adds a :class:`~sims.task.Task` subclass.

Outside code registers its own tasks the same way; lookups of an unknown name raise a
``ValueError`` that lists the valid names and suggests the closest ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from sims.task import Task

T = TypeVar("T", bound="type[Task]")

_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator that registers a task under ``name`` (also stored as ``cls.name``)."""

    def decorator(cls: T) -> T:
        if name in _TASKS and _TASKS[name] is not cls:
            raise ValueError(f"task '{name}' is already registered by {_TASKS[name].__qualname__}")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return decorator


def task_names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_TASKS)


def get_task_class(name: str) -> type[Task]:
    """The task class registered as ``name``; unknown names raise with suggestions."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        from vla_rft.errors import UserInputError

        raise UserInputError(f"unknown task '{name}'.{hint} Valid tasks: {', '.join(task_names())}")
    return _TASKS[name]
