"""Typed configuration: dataclasses + YAML presets under ``configs/`` + command-line overrides.

Parsing is done by draccus (the library LeRobot uses). This module adds what the project
needs on top: presets found by name under ``configs/``, unknown keys (on the command line or in
YAML) rejected with a "did you mean" suggestion *before* anything runs, and one-line errors.

Command-line syntax: ``--field value`` or ``--field=value``; nested fields with dots,
``--logging.wandb=disabled``; a preset with ``--config NAME_OR_PATH``.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config key, preset or value is wrong; the message says which and what would be valid."""


def require_at_least(cfg: Any, names: tuple[str, ...] | list[str], minimum: int = 1, *, prefix: str = "--",
                     error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` naming the first of ``cfg``'s fields ``names`` below ``minimum``."""
    for name in names:
        value = getattr(cfg, name)
        if value < minimum:
            raise error(f"{prefix}{name} must be >= {minimum}, got {value}")


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (also through ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def field_paths(cls: type, prefix: str = "") -> list[str]:
    """All dotted field names of a (nested) dataclass, leaves and inner nodes."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        out.append(path)
        inner = _dataclass_of(hints.get(f.name))
        if inner is not None:
            out.extend(field_paths(inner, path + "."))
    return out


def _check_keys(keys: list[str], cls: type, where: str) -> None:
    valid = field_paths(cls)
    for key in keys:
        if key not in valid:
            leaves = sorted(v for v in valid if v.count(".") == key.count("."))
            raise ConfigError(f"unknown config key '{key}' in {where}{_suggest(key, valid)}; valid keys: {', '.join(leaves)}")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out.extend(_flatten(v, prefix + str(k) + "."))
    return out


def resolve_preset(name_or_path: str, group: str | None = None) -> Path:
    """A YAML preset by path, or by name under ``configs/`` (``configs/<group>/<name>.yaml``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidates = [CONFIGS_DIR / f"{name_or_path}.yaml", CONFIGS_DIR / name_or_path]
    if group:
        candidates.insert(0, CONFIGS_DIR / group / f"{name_or_path}.yaml")
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(str(q.relative_to(CONFIGS_DIR).with_suffix("")) for q in CONFIGS_DIR.rglob("*.yaml"))
    raise ConfigError(f"config preset '{name_or_path}' not found{_suggest(name_or_path, known)}; presets: {', '.join(known) or 'none'}")


def _cli_keys(args: list[str]) -> list[str]:
    keys = []
    for a in args:
        if a.startswith("--"):
            keys.append(a[2:].split("=", 1)[0].replace("-", "_"))
    return keys


def _leaf_type(cls: type, path: str) -> Any:
    tp: Any = cls
    for part in path.split("."):
        dc = _dataclass_of(tp)
        if dc is None:
            return None
        tp = typing.get_type_hints(dc).get(part)
    return tp


def _expand_bool_flags(cls: type, args: list[str]) -> list[str]:
    """Let boolean fields be given as bare flags: ``--json`` means ``--json=true``."""
    out = []
    for i, a in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else None
        bare = a.startswith("--") and "=" not in a and (nxt is None or nxt.startswith("--"))
        if bare and _leaf_type(cls, a[2:].replace("-", "_")) in (bool, bool | None):
            a = a + "=true"
        out.append(a)
    return out


def parse_config(cls: type[T], args: list[str], *, group: str | None = None) -> T:
    """Build a ``cls`` from an optional ``--config`` preset and ``--key value`` overrides."""
    import draccus

    args = list(args)
    config_path: Path | None = None
    for i, a in enumerate(args):
        if a == "--config" or a.startswith("--config="):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else None)
            if value is None:
                raise ConfigError("--config needs a preset name or a YAML path")
            config_path = resolve_preset(value, group)
            del args[i : i + (1 if "=" in a else 2)]
            break
    if config_path is not None:
        try:
            data = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"preset '{config_path}' is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"preset '{config_path}' must be a YAML mapping of config keys")
        _check_keys(_flatten(data), cls, f"preset '{config_path}'")
    _check_keys(_cli_keys(args), cls, "the command line")
    args = _expand_bool_flags(cls, args)
    try:
        return draccus.parse(config_class=cls, config_path=str(config_path) if config_path else None, args=args)
    except SystemExit as e:  # argparse reports value errors by exiting
        raise ConfigError(f"invalid command-line value(s) in: {' '.join(args)}") from e
    except Exception as e:  # draccus decoding errors: wrong value types in YAML
        raise ConfigError(f"invalid config value: {e}") from e


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (what is written to a run directory)."""
    import draccus

    buf = io.StringIO()
    draccus.dump(cfg, buf)
    return buf.getvalue()


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (for checkpoints' config.json)."""
    return yaml.safe_load(to_yaml(cfg))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config from :func:`to_dict` output, rejecting unknown keys."""
    import draccus

    _check_keys(_flatten(data), cls, "stored config")
    return draccus.decode(cls, data)
