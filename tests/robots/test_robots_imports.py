"""The robot side must import without the training stack (a robot computer may lack torch).

Every module under ``robots/`` (found with pkgutil, so a new module is covered without editing this
file) is imported in a fresh interpreter; none may load torch, lerobot, datasets, mujoco, sims or
any of vla_rft beyond ``vla_rft.contract``. What robots/ needs from those packages it reaches by
name through ``robots.adapters`` at the call that needs it; a static check keeps import statements
naming them out of robots/ entirely (not even inside a function).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import robots
from robots import adapters

ROBOTS_DIR = Path(robots.__file__).resolve().parent

FORBIDDEN = ("torch", "lerobot", "datasets", "mujoco", "sims", "gymnasium", "transformers", "jax",
             "world_models", "vla_rft.policies", "vla_rft.algorithms", "vla_rft.commands",
             "vla_rft.data", "vla_rft.trainer")
"""Packages no ``robots`` module may load at import time (a package covers its submodules)."""

ALLOWED_VLA_RFT = ("vla_rft", "vla_rft.contract")
"""The only vla_rft modules a robots module may load: the observation/action contract."""

EXPECTED_MODULES = {
    "robots.adapters", "robots.base", "robots.client", "robots.config", "robots.dataset_log",
    "robots.deploy", "robots.episode", "robots.executor", "robots.fake", "robots.mujoco_robot",
    "robots.outcome", "robots.policy", "robots.ros_robot", "robots.rosbridge", "robots.safety",
    "robots.server", "robots.teleop", "robots.timing", "robots.wire",
}


def robots_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(robots.__path__, "robots."))


def test_every_robots_module_is_enumerated() -> None:
    found = set(robots_modules())
    assert EXPECTED_MODULES <= found, sorted(EXPECTED_MODULES - found)


def _loaded(prefixes: tuple[str, ...], modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_importing_any_robots_module_loads_no_training_stack() -> None:
    """Each module in turn, in one fresh interpreter; a heavy module is blamed on its importer."""
    code = (
        "import importlib, json, sys\n"
        f"forbidden, allowed = {FORBIDDEN!r}, {ALLOWED_VLA_RFT!r}\n"
        "def bad():\n"
        "    return {m for m in sys.modules\n"
        "            if any(m == p or m.startswith(p + '.') for p in forbidden)\n"
        "            or ((m == 'vla_rft' or m.startswith('vla_rft.')) and m not in allowed)}\n"
        "report = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    before = bad()\n"
        "    importlib.import_module(name)\n"
        "    new = sorted(bad() - before)\n"
        "    if new:\n"
        "        report[name] = new\n"
        "print(json.dumps(report))\n"
    )
    names = robots_modules()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(names)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {}, f"robots modules loading heavy modules at import time: {report}"


@pytest.mark.parametrize("name", ["robots.deploy", "robots.mujoco_robot", "robots.episode",
                                  "robots.dataset_log"])
def test_deploy_and_mujoco_robot_import_alone_stay_light(name: str) -> None:
    """The modules that use heavy packages (through adapters) import light on their own, too."""
    code = (f"import sys, {name}\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
            f"or (m.startswith('vla_rft') and m not in {ALLOWED_VLA_RFT!r})))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def _imported_names(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
    return names


def test_robots_sources_reach_heavy_packages_only_through_adapters() -> None:
    """No import statement in robots/, even a lazy one inside a function, names a heavy package."""
    offenders = []
    for path in sorted(ROBOTS_DIR.rglob("*.py")):
        for line, name in _imported_names(path):
            heavy = _loaded(FORBIDDEN, {name})
            foreign_vla = (name == "vla_rft" or name.startswith("vla_rft.")) and name not in ALLOWED_VLA_RFT
            if heavy or foreign_vla:
                offenders.append(f"{path.relative_to(ROBOTS_DIR.parent)}:{line}: import {name}")
    assert not offenders, "use robots.adapters.load_adapter instead:\n" + "\n".join(offenders)


def test_adapter_targets_name_existing_modules() -> None:
    """Every default adapter names an installed module (found without importing it)."""
    for name, target in adapters.ADAPTERS.items():
        module = target.partition(":")[0]
        assert importlib.util.find_spec(module.split(".")[0]) is not None, (name, target)


def test_load_adapter_imports_by_name_and_names_unknown_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "ADAPTERS", dict(adapters.ADAPTERS))
    adapters.register_adapter("test.join", "os.path:join")
    assert adapters.load_adapter("test.join")("a", "b") == "a/b"
    adapters.register_adapter("test.sep", "os:path.sep")  # dotted attribute
    assert adapters.load_adapter("test.sep") == "/"
    with pytest.raises(ValueError, match="already"):
        adapters.register_adapter("test.join", "os.path:split")
    adapters.register_adapter("test.join", "os.path:split", replace=True)
    assert adapters.load_adapter("test.join")("a/b") == ("a", "b")
    with pytest.raises(ValueError, match="module:attribute"):
        adapters.register_adapter("test.bad", "os.path")
    with pytest.raises(KeyError, match="did you mean 'episode_writer'"):
        adapters.load_adapter("episode_writr")
    adapters.register_adapter("test.missing", "no_such_module_xyz:thing")
    with pytest.raises(ModuleNotFoundError) as info:
        adapters.load_adapter("test.missing")
    assert "robots adapter 'test.missing'" in "".join(getattr(info.value, "__notes__", []))
