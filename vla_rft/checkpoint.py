"""Checkpoints as a directory: tensors in safetensors, everything else in JSON. No pickle.

Layout of a checkpoint directory::

    <dir>/
      meta.json               format version, kind, step counters, file manifest with sizes + sha256
      config.json             the resolved config that produced the weights
      model.safetensors       named tensors (model weights)
      optimizer.safetensors   optional: flattened optimizer state tensors
      state.safetensors       optional: a trainer's other tensors (stateful loss terms)
      normalizer.json         optional: normalization statistics (lists of floats)
      rng.json                optional: python/numpy/torch (CPU and CUDA) RNG state
      extra.json              optional: anything else JSON-serializable

Writes are atomic: everything goes to ``<dir>.tmp-<pid>`` and is renamed into place, so a
crash mid-write never leaves a half-written checkpoint under the final name. Loading checks
the format version, the kind, the presence and size/hash of every file, and raises
:class:`CheckpointError` with a message naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
META_FILE = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, of the wrong kind or of another format."""


@dataclass
class Checkpoint:
    """An in-memory checkpoint. ``tensors`` and ``optimizer`` map names to torch tensors."""

    kind: str
    config: dict[str, Any]
    tensors: dict[str, Any]
    step: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    state: dict[str, Any] | None = None  # a trainer's other tensors (stateful loss terms)
    normalizer: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file + rename (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(ckpt: Checkpoint, directory: str | os.PathLike) -> Path:
    """Write ``ckpt`` atomically to ``directory`` (replacing an older checkpoint there)."""
    from safetensors.torch import save_file

    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(_contiguous(ckpt.tensors), str(tmp / "model.safetensors"))
        if ckpt.optimizer is not None:
            save_file(_contiguous(ckpt.optimizer), str(tmp / "optimizer.safetensors"))
        if ckpt.state is not None:
            save_file(_contiguous(ckpt.state), str(tmp / "state.safetensors"))
        _write_json(tmp / "config.json", ckpt.config)
        for name, obj in (("normalizer", ckpt.normalizer), ("rng", ckpt.rng), ("extra", ckpt.extra)):
            if obj is not None:
                _write_json(tmp / f"{name}.json", obj)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        meta = {
            "format": "vla-rft-checkpoint",
            "format_version": FORMAT_VERSION,
            "kind": ckpt.kind,
            "step": int(ckpt.step),
            "counters": {k: int(v) for k, v in ckpt.counters.items()},
            "files": files,
        }
        _write_json(tmp / META_FILE, meta)
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _contiguous(tensors: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``meta.json`` of a checkpoint directory."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint '{d}' is not a directory (expected a vla-rft checkpoint dir)")
    meta_path = d / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint '{d}' has no {META_FILE}: not a vla-rft checkpoint")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint '{d}': {META_FILE} is corrupt ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != "vla-rft-checkpoint":
        raise CheckpointError(f"checkpoint '{d}': {META_FILE} is not a vla-rft checkpoint manifest")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{d}' has format version {version}; this vla-rft reads version {FORMAT_VERSION}"
        )
    return meta


def _verify_files(d: Path, meta: dict[str, Any]) -> None:
    for name, info in meta["files"].items():
        p = d / name
        if not p.is_file():
            raise CheckpointError(f"checkpoint '{d}' is missing {name}")
        size = p.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(
                f"checkpoint '{d}': {name} is {size} bytes, manifest says {info['bytes']} (truncated or modified)"
            )
        if _sha256(p) != info["sha256"]:
            raise CheckpointError(f"checkpoint '{d}': {name} fails its sha256 check (corrupt)")


def load_checkpoint(directory: str | os.PathLike, *, kind: str | None = None, device: str = "cpu") -> Checkpoint:
    """Load and verify a checkpoint; ``kind`` (if given) must match the stored kind."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    meta = read_meta(d)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"checkpoint '{d}' holds a '{meta.get('kind')}', expected a '{kind}'")
    _verify_files(d, meta)

    def tensors(name: str) -> dict[str, Any] | None:
        if not (d / name).is_file():
            return None
        try:
            return load_file(str(d / name), device=device)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint '{d}': {name} is not a valid safetensors file ({e})") from e

    def js(name: str) -> Any:
        p = d / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    return Checkpoint(
        kind=meta["kind"],
        config=js("config") or {},
        tensors=tensors("model.safetensors") or {},
        step=int(meta.get("step", 0)),
        counters=dict(meta.get("counters", {})),
        optimizer=tensors("optimizer.safetensors"),
        state=tensors("state.safetensors"),
        normalizer=js("normalizer"),
        rng=js("rng"),
        extra=js("extra"),
    )
