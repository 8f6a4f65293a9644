"""The policy server's wire format: msgpack maps, numpy arrays as ``{dtype, shape, data}``.

An array travels as ``{"__ndarray__": true, "dtype": "<f4", "shape": [h, A], "data": <bytes>}``
(little-endian dtype strings; only plain numeric and bool dtypes, never ``object``, so a message
cannot smuggle pickled code). Decoding checks that ``data`` holds exactly
``prod(shape) * itemsize`` bytes. Unpacking is bounded (string, binary, array and map lengths)
so a small hostile message cannot make the peer allocate a huge structure.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
ARRAY_TAG = "__ndarray__"
ALLOWED_KINDS = frozenset("biuf")  # bool, signed, unsigned, float
MAX_DIMS = 8


class WireError(ValueError):
    """A message could not be encoded or decoded."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"arrays of dtype {obj.dtype} cannot be sent")
        arr = np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("<"))
        return {ARRAY_TAG: True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise WireError(f"cannot encode {type(obj).__name__}")


def _decode_array(m: dict[str, Any]) -> np.ndarray:
    dtype_s, shape, data = m.get("dtype"), m.get("shape"), m.get("data")
    if not isinstance(dtype_s, str) or not isinstance(data, bytes) or not isinstance(shape, list):
        raise WireError("array needs string 'dtype', list 'shape' and bytes 'data'")
    try:
        dtype = np.dtype(dtype_s)
    except TypeError as exc:
        raise WireError(f"bad dtype {dtype_s!r}") from exc
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"dtype {dtype_s!r} is not allowed")
    if len(shape) > MAX_DIMS or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                        for d in shape):
        raise WireError(f"bad shape {shape!r}")
    if math.prod(shape) * dtype.itemsize != len(data):
        raise WireError(f"array data has {len(data)} bytes, shape {shape} of {dtype_s} needs "
                        f"{math.prod(shape) * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _object_hook(m: dict[Any, Any]) -> Any:
    if m.get(ARRAY_TAG) is True:
        return _decode_array(m)
    return m


def pack(message: dict[str, Any]) -> bytes:
    """Encode one message (a dict that may contain numpy arrays)."""
    try:
        return msgpack.packb(message, default=_encode, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(str(exc)) from exc


def unpack(payload: bytes | str, max_size: int = 64 * 2**20) -> dict[str, Any]:
    """Decode one message; raises :class:`WireError` for anything that is not a sane msgpack map."""
    if isinstance(payload, str):
        raise WireError("text frames are not accepted; send msgpack as binary")
    if len(payload) > max_size:
        raise WireError(f"message of {len(payload)} bytes exceeds {max_size}")
    try:
        out = msgpack.unpackb(payload, object_hook=_object_hook, raw=False, strict_map_key=True,
                              max_str_len=max_size, max_bin_len=max_size,
                              max_array_len=100_000, max_map_len=10_000, max_ext_len=0)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError, ...)
        raise WireError(f"not a valid msgpack message: {type(exc).__name__}") from exc
    if not isinstance(out, dict):
        raise WireError(f"a message must be a map, got {type(out).__name__}")
    return out
