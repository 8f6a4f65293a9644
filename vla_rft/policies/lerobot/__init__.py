"""LeRobot policies behind the project's Policy interface (see :mod:`.adapter` and
docs/policies.md, "LeRobot policies").

This package module is deliberately light (json/pathlib only): :func:`vla_rft.policies.base.load_policy`
asks :func:`is_lerobot_pretrained_dir` about every path it loads, and importing :mod:`.adapter`
(which registers the ``lerobot`` policy type and needs lerobot) is left to the paths that are
LeRobot's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vla_rft.checkpoint import META_FILE

LEROBOT_PREFIX = "lerobot:"
LEROBOT_CONFIG = "config.json"

__all__ = ["LEROBOT_CONFIG", "LEROBOT_PREFIX", "is_lerobot_pretrained_dir", "strip_prefix"]


def strip_prefix(path: str | os.PathLike) -> tuple[Path, bool]:
    """(directory, forced): ``lerobot:DIR`` forces the LeRobot loader."""
    text = os.fspath(path)
    if text.startswith(LEROBOT_PREFIX):
        return Path(text[len(LEROBOT_PREFIX):]), True
    return Path(text), False


def is_lerobot_pretrained_dir(path: str | os.PathLike) -> bool:
    """True for ``lerobot:...`` paths and for directories with a LeRobot ``config.json`` (a
    ``"type"`` field) and no vla-rft ``meta.json``. Reads JSON only; imports nothing heavy."""
    directory, forced = strip_prefix(path)
    if forced:
        return True
    cfg = directory / LEROBOT_CONFIG
    if not directory.is_dir() or (directory / META_FILE).exists() or not cfg.is_file():
        return False
    try:
        return isinstance(json.loads(cfg.read_text()).get("type"), str)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False
