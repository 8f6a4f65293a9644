"""The thin, synchronous policy client for the robot computer (no torch, no asyncio needed).

    with PolicyClient("127.0.0.1", 8765, token) as client:
        chunk = client.infer(obs)          # (h, A) float32
        executor = ChunkExecutor(robot, client.infer, safety)

Every call has a timeout. Replies are matched by request id, so a late reply to a request that
timed out is discarded rather than mistaken for the next answer. A closed connection is
re-opened (and re-authenticated) on the next call.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Any, Self

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from robots.base import STAMP_KEY
from robots.policy import PolicyMetadata
from robots.wire import PROTOCOL_VERSION, pack, unpack
from vla_rft.contract import IMAGE_PREFIX, STATE_KEY, TASK_KEY


class PolicyServerError(RuntimeError):
    """The server answered with an error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class PolicyClient:
    """A blocking client of :class:`robots.server.PolicyServer`; thread-safe (one call at a time)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, token: str = "", *,
                 timeout_s: float = 5.0, connect_timeout_s: float = 5.0,
                 max_message_bytes: int = 16 * 2**20) -> None:
        self.url = f"ws://{host}:{port}"
        self.token = token
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self.metadata: PolicyMetadata | None = None
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ connection
    def connect(self) -> PolicyMetadata:
        """Open, authenticate, and return the server's policy metadata."""
        with self._lock:
            return self._connect()

    def _connect(self) -> PolicyMetadata:
        self._drop()
        try:
            ws = self._stack.enter_context(connect(
                self.url, open_timeout=self.connect_timeout_s, max_size=self.max_message_bytes,
                compression=None, close_timeout=1.0))
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach policy server at {self.url}: {exc}") from exc
        self._ws = ws
        ws.send(pack({"type": "auth", "token": self.token, "protocol": PROTOCOL_VERSION}))
        reply = self._receive(None, self.connect_timeout_s)
        if reply.get("protocol") != PROTOCOL_VERSION:
            raise PolicyServerError("protocol", f"server speaks protocol {reply.get('protocol')}, "
                                                f"client {PROTOCOL_VERSION}")
        self.metadata = PolicyMetadata.from_dict(reply["metadata"])
        return self.metadata

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._ws = None
        self._stack.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def infer(self, obs: dict[str, Any]) -> np.ndarray:
        """Chunk ``(h, A)`` for one unbatched contract observation."""
        reply = self._request({"type": "infer", "obs": _contract_only(obs), "batched": False})
        return np.asarray(reply["chunk"], dtype=np.float32)

    __call__ = infer

    def infer_batch(self, obs_batch: dict[str, Any]) -> np.ndarray:
        """Chunks ``(B, h, A)`` for a batched observation (``task`` a list of strings)."""
        reply = self._request({"type": "infer", "obs": _contract_only(obs_batch), "batched": True})
        return np.asarray(reply["chunk"], dtype=np.float32)

    def health(self) -> dict[str, Any]:
        """The server's health reply (status, uptime, request counters)."""
        return self._request({"type": "health"})

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._ws is None:
                self._connect()
            rid = next(self._ids)
            try:
                assert self._ws is not None
                self._ws.send(pack({**message, "id": rid}))
                return self._receive(rid, self.timeout_s)
            except ConnectionClosed as exc:
                self._ws = None
                raise ConnectionError(f"policy server closed the connection: {exc}") from exc

    def _receive(self, rid: int | None, timeout_s: float) -> dict[str, Any]:
        """Wait for the reply to ``rid`` (skipping stale replies); raise on error replies."""
        assert self._ws is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply from {self.url} within {timeout_s} s")
            try:
                reply = unpack(self._ws.recv(timeout=remaining), self.max_message_bytes)
            except TimeoutError as exc:
                raise TimeoutError(f"no reply from {self.url} within {timeout_s} s") from exc
            if reply.get("type") == "error" and reply.get("id") in (rid, None):
                raise PolicyServerError(str(reply.get("code")), str(reply.get("message")))
            if reply.get("id") == rid:
                return reply


def _contract_only(obs: dict[str, Any]) -> dict[str, Any]:
    """Drop keys the server does not take (the robot's stamp, extra debug entries)."""
    return {k: (np.asarray(v) if k != TASK_KEY else v) for k, v in obs.items()
            if k != STAMP_KEY and (k in (STATE_KEY, TASK_KEY) or k.startswith(IMAGE_PREFIX))}
