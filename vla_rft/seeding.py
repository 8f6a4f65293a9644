"""Explicit seeding and RNG-state capture for python, numpy and torch (saved in checkpoints)."""

from __future__ import annotations

import base64
import random
from typing import Any

import numpy as np


def seed_everything(seed: int, *, deterministic_torch: bool = True) -> np.random.Generator:
    """Seed python, numpy's legacy global RNG and torch; return a fresh numpy Generator.

    Code in this project takes explicit ``rng``/``seed`` arguments; the global seeds are set
    only so that third-party code (lerobot transforms, torch initializers) is reproducible too.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # the robot side runs without torch
        pass
    else:
        torch.manual_seed(seed)
        if deterministic_torch:
            torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def get_rng_state(np_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Capture RNG state as JSON-serializable data (no pickle)."""
    import torch

    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy_global": _np_legacy_state(),
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = [base64.b64encode(t.numpy().tobytes()).decode() for t in torch.cuda.get_rng_state_all()]
    if np_rng is not None:
        state["numpy_generator"] = np_rng.bit_generator.state
    return state


def _np_legacy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` captured."""
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    g = state["numpy_global"]
    np.random.set_state((g["name"], np.array(g["keys"], dtype=np.uint32), g["pos"], g["has_gauss"], g["cached"]))
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())
                                      for s in state["torch_cuda"]])
    if np_rng is not None and "numpy_generator" in state:
        np_rng.bit_generator.state = state["numpy_generator"]
