"""The policy server: a websocket endpoint that serves any :class:`PolicyProtocol`.

Protocol (every frame a msgpack map, see :mod:`robots.wire` and ``docs/deployment.md``):

1. The client's first message is ``{"type": "auth", "token": T}`` within ``auth_timeout_s``.
   A wrong or missing token gets ``{"type": "error", "code": "unauthorized"}`` and the
   connection is closed (code 1008); nothing else is ever processed before a valid token.
2. The server answers ``{"type": "metadata", "protocol": 1, "metadata": {...}}``.
3. Then requests: ``infer`` (``obs``, optional ``batched``), ``health`` and ``metadata``; each
   may carry an ``id`` that the reply echoes. Every request is schema-checked with the contract
   validators; any problem (bad msgpack, bad schema, a policy exception, a timeout) is answered
   with an ``error`` message and the connection stays open. Frames larger than
   ``max_message_bytes`` are refused by the websocket layer (close code 1009).

The server binds 127.0.0.1 unless told otherwise. Policy calls run in one worker thread, so the
policy need not be thread-safe and the event loop stays responsive (health checks answer while a
slow policy computes).

Before it accepts connections the server is *warm*: it runs one inference on a dummy observation
built from the policy's metadata (:func:`dummy_observation`) and logs ``policy warm: first
inference took X s``. Trained policies load heavy parts lazily (the frozen instruction encoder
takes ~10 s), and a client's first request must not pay for that: its timeout is 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from robots.base import STAMP_KEY
from robots.policy import PolicyMetadata, PolicyProtocol, load_policy
from robots.wire import PROTOCOL_VERSION, WireError, pack, unpack
from vla_rft.contract import (
    IMAGE_PREFIX,
    STATE_KEY,
    TASK_KEY,
    ContractError,
    validate_action,
    validate_observation,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "VLA_RFT_SERVER_TOKEN"

WARMUP_TASK = "warm up"
"""Instruction of the warm-up observation."""
WARMUP_IMAGE_SHAPE = (64, 64)
"""``(H, W)`` of the warm-up images when the policy's metadata fixes no ``image_shape``."""


class PolicyWarmupError(RuntimeError):
    """The policy failed its warm-up inference, so it is not served; the message says why."""


class RequestError(Exception):
    """A request the server refuses; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ServerConfig:
    """Where and how the policy server listens."""

    host: str = "127.0.0.1"
    """Bind address; loopback by default (put a tunnel or VPN in front for remote robots)."""
    port: int = 8765
    """TCP port; 0 picks a free one (tests)."""
    token: str = ""
    """Shared secret the client's first message must carry; must not be empty."""
    max_message_bytes: int = 16 * 2**20
    """Largest accepted frame; bigger ones close the connection (websocket code 1009)."""
    auth_timeout_s: float = 5.0
    """Connections that do not authenticate within this time are closed."""
    infer_timeout_s: float = 30.0
    """A policy call taking longer is answered with a ``timeout`` error."""
    max_batch: int = 64
    """Largest batch accepted in one ``infer`` request."""
    max_in_flight: int = 4
    """Requests answered concurrently per connection; further frames wait (backpressure)."""
    warmup: bool = True
    """Run one inference on a dummy observation before accepting connections, so that lazy
    loading (the instruction encoder) happens then, not during the first client request."""


class PolicyServer:
    """Serves one policy to any number of authenticated clients."""

    def __init__(self, policy: PolicyProtocol, config: ServerConfig) -> None:
        if not config.token:
            raise ValueError("the policy server needs a non-empty token")
        self.policy = policy
        self.config = config
        self.metadata = policy.metadata
        self.stats: Counter[str] = Counter()
        self.port: int | None = None
        self._started = time.monotonic()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="policy")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._token = config.token.encode()
        self.warmup_s: float | None = None
        """How long the warm-up inference took (s); None until :meth:`warm_up` ran."""

    # ------------------------------------------------------------------ running
    def warm_up(self) -> float:
        """Run one inference on :func:`dummy_observation` in the policy thread; returns its seconds.

        The dummy goes through the same validation as a request, and the chunk through the same
        output checks. Runs once (later calls return the first duration); raises
        :class:`PolicyWarmupError` when the policy fails, since it would fail its clients too.
        """
        if self.warmup_s is not None:
            return self.warmup_s
        name = self.metadata.name
        start = time.perf_counter()
        try:
            obs = self._checked_batch({"obs": dummy_observation(self.metadata)})
            chunk = self._pool.submit(self.policy.act, obs).result()
            self._checked_chunk(chunk, 1)
        except Exception as exc:
            raise PolicyWarmupError(f"policy '{name}' failed its warm-up inference on a dummy "
                                    f"observation: {type(exc).__name__}: {exc}") from exc
        self.warmup_s = time.perf_counter() - start
        log.info("policy warm: first inference took %.2f s (%s)", self.warmup_s, name)
        return self.warmup_s

    async def serve_async(self) -> None:
        """Warm up (unless ``config.warmup`` is off), then serve until :meth:`stop` is called."""
        if self.config.warmup:
            await asyncio.to_thread(self.warm_up)
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with serve(self._handle, self.config.host, self.config.port,
                         max_size=self.config.max_message_bytes, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving %s on ws://%s:%d", self.metadata.name, self.config.host, self.port)
            self._ready.set()
            await self._stop.wait()

    def start(self, timeout_s: float = 10.0) -> int:
        """Warm up in the calling thread, then serve from a background thread; returns the port.

        ``timeout_s`` bounds binding the socket, not the warm-up (a checkpoint may take longer to
        warm than a server to start); a failed warm-up raises :class:`PolicyWarmupError` here.
        """
        if self.config.warmup:
            self.warm_up()
        self._thread = threading.Thread(target=asyncio.run, args=(self.serve_async(),),
                                        name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("policy server did not start")
        assert self.port is not None
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ connections
    async def _handle(self, ws: ServerConnection) -> None:
        """Authenticate, then answer requests concurrently (a health check need not wait for a
        slow ``infer``), at most ``max_in_flight`` per connection; replies carry the request id."""
        self.stats["connections"] += 1
        tasks: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.config.max_in_flight)
        try:
            if not await self._authenticate(ws):
                return
            async for raw in ws:
                await slots.acquire()
                task = asyncio.create_task(self._answer(ws, raw, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()

    async def _answer(self, ws: ServerConnection, raw: bytes | str, slots: asyncio.Semaphore) -> None:
        try:
            await ws.send(pack(await self._reply(raw)))
        except ConnectionClosed:
            pass
        finally:
            slots.release()

    async def _authenticate(self, ws: ServerConnection) -> bool:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.config.auth_timeout_s)
        except TimeoutError:
            self.stats["auth_timeout"] += 1
            await ws.close(1008, "authentication timeout")
            return False
        token = b""
        try:
            msg = unpack(raw, self.config.max_message_bytes)
            if msg.get("type") == "auth" and isinstance(msg.get("token"), str):
                token = msg["token"].encode()
        except WireError:
            pass
        if not token or not hmac.compare_digest(token, self._token):
            self.stats["auth_failed"] += 1
            await ws.send(pack(_error(None, "unauthorized", "first message must be "
                                                            "{'type': 'auth', 'token': ...}")))
            await ws.close(1008, "unauthorized")
            return False
        self.stats["authenticated"] += 1
        await ws.send(pack(self._metadata_reply(None)))
        return True

    async def _reply(self, raw: bytes | str) -> dict[str, Any]:
        """Answer one request; every failure becomes an error message."""
        rid: Any = None
        try:
            msg = unpack(raw, self.config.max_message_bytes)
            rid = _request_id(msg)
            reply = await self._dispatch(msg, rid)
            self.stats["ok"] += 1
            return reply
        except WireError as exc:
            return self._count_error(rid, "bad_message", str(exc))
        except RequestError as exc:
            return self._count_error(rid, exc.code, str(exc))
        except Exception as exc:
            log.exception("unexpected error answering a request")
            return self._count_error(rid, "internal", f"{type(exc).__name__}: {exc}")

    def _count_error(self, rid: Any, code: str, message: str) -> dict[str, Any]:
        self.stats[f"error.{code}"] += 1
        return _error(rid, code, message)

    async def _dispatch(self, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        kind = msg.get("type")
        if kind == "infer":
            return await self._infer(msg, rid)
        if kind == "health":
            return {"type": "health", "id": rid, "status": "ok", "policy": self.metadata.name,
                    "uptime_s": time.monotonic() - self._started,
                    "stats": dict(self.stats), "protocol": PROTOCOL_VERSION}
        if kind == "metadata":
            return self._metadata_reply(rid)
        raise RequestError("bad_request", f"unknown request type {kind!r} "
                                          "(expected 'infer', 'health' or 'metadata')")

    def _metadata_reply(self, rid: Any) -> dict[str, Any]:
        return {"type": "metadata", "id": rid, "protocol": PROTOCOL_VERSION,
                "metadata": self.metadata.to_dict()}

    async def _infer(self, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        obs = self._checked_batch(msg)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            chunk = await asyncio.wait_for(loop.run_in_executor(self._pool, self.policy.act, obs),
                                           self.config.infer_timeout_s)
        except TimeoutError as exc:
            raise RequestError("timeout", f"policy took longer than {self.config.infer_timeout_s} s") from exc
        except Exception as exc:
            raise RequestError("policy_error", f"{type(exc).__name__}: {exc}") from exc
        chunk = self._checked_chunk(chunk, len(obs[TASK_KEY]))
        if not msg.get("batched", False):
            chunk = chunk[0]
        return {"type": "action", "id": rid, "chunk": chunk,
                "timing": {"infer_ms": 1000 * (time.perf_counter() - start)}}

    # ------------------------------------------------------------------ validation
    def _checked_batch(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The request's observation as a validated batch (leading axis B)."""
        obs, batched = msg.get("obs"), msg.get("batched", False)
        if not isinstance(obs, dict):
            raise RequestError("schema", "'obs' must be a map")
        if not isinstance(batched, bool):
            raise RequestError("schema", "'batched' must be true or false")
        out: dict[str, Any] = {}
        for key, value in obs.items():
            if key == STAMP_KEY:
                continue
            if key == TASK_KEY:
                out[key] = _task_list(value, batched)
            elif key == STATE_KEY or key.startswith(IMAGE_PREFIX):
                if not isinstance(value, np.ndarray):
                    raise RequestError("schema", f"'{key}' must be an array")
                out[key] = value if batched else value[None]
            else:
                raise RequestError("schema", f"unexpected observation key '{key}'")
        if TASK_KEY not in out:
            raise RequestError("schema", f"observation is missing '{TASK_KEY}'")
        meta = self.metadata
        try:
            validate_observation(out, cameras=meta.cameras, state_dim=meta.state_dim, batched=True)
        except ContractError as exc:
            raise RequestError("schema", str(exc)) from exc
        self._check_sizes(out)
        out[STATE_KEY] = out[STATE_KEY].astype(np.float32)
        return out

    def _check_sizes(self, obs: dict[str, Any]) -> None:
        b = len(obs[TASK_KEY])
        if not 1 <= b <= self.config.max_batch:
            raise RequestError("schema", f"batch size {b} outside [1, {self.config.max_batch}]")
        shape = self.metadata.image_shape
        for key, value in obs.items():
            if key != TASK_KEY and value.shape[0] != b:
                raise RequestError("schema", f"'{key}' has batch {value.shape[0]}, task has {b}")
            if shape and key.startswith(IMAGE_PREFIX) and list(value.shape[1:3]) != list(shape):
                raise RequestError("schema", f"'{key}' is {list(value.shape[1:3])}, expected {shape}")

    def _checked_chunk(self, chunk: Any, batch: int) -> np.ndarray:
        meta = self.metadata
        try:
            bounded = meta.action_space == "ee_delta"
            arr = validate_action(chunk, meta.action_dim, low=-1.0 if bounded else -np.inf,
                                  high=1.0 if bounded else np.inf)
        except ContractError as exc:
            raise RequestError("policy_error", f"policy output rejected: {exc}") from exc
        if arr.shape != (batch, meta.chunk_size, meta.action_dim):
            raise RequestError("policy_error", f"policy returned {arr.shape}, expected "
                                               f"{(batch, meta.chunk_size, meta.action_dim)}")
        return arr


def dummy_observation(meta: PolicyMetadata) -> dict[str, Any]:
    """An unbatched observation that fits ``meta``: zero state, black images, :data:`WARMUP_TASK`."""
    h, w = meta.image_shape or WARMUP_IMAGE_SHAPE
    obs: dict[str, Any] = {STATE_KEY: np.zeros(meta.state_dim, np.float32), TASK_KEY: WARMUP_TASK}
    for cam in meta.cameras:
        obs[IMAGE_PREFIX + cam] = np.zeros((h, w, 3), np.uint8)
    return obs


def _error(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "id": rid, "code": code, "message": message}


def _request_id(msg: dict[str, Any]) -> Any:
    rid = msg.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (int, str))
                            or (isinstance(rid, str) and len(rid) > 128)):
        raise RequestError("schema", "'id' must be an integer or a short string")
    return rid


def _task_list(value: Any, batched: bool) -> list[str]:
    tasks = value if batched else [value]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise RequestError("schema", f"'{TASK_KEY}' must be a string (a list of strings when batched)")
    return tasks


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-rft serve", description="Serve a policy over websockets.")
    p.add_argument("--policy", required=True, help="scripted:zero | scripted:hold | checkpoint path")
    p.add_argument("--loader", default=None, help="package.module:function that loads --policy")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=None, help=f"shared secret (default: ${TOKEN_ENV}, else random)")
    p.add_argument("--max-message-mb", type=float, default=16.0)
    p.add_argument("--action-dim", type=int, default=7, help="scripted policies only")
    p.add_argument("--state-dim", type=int, default=7, help="scripted policies only")
    p.add_argument("--chunk-size", type=int, default=10, help="scripted policies only")
    p.add_argument("--cameras", default="", help="comma-separated camera names (scripted only)")
    p.add_argument("--action-space", default="ee_delta", choices=["ee_delta", "joint_position"])
    return p


def serve_main(argv: list[str] | None = None, policy: PolicyProtocol | None = None) -> int:
    """Entry point of ``vla-rft serve``; ``policy`` serves an object directly (tests, notebooks)."""
    args = build_parser().parse_args(argv)
    options = {"action_dim": args.action_dim, "state_dim": args.state_dim,
               "chunk_size": args.chunk_size, "action_space": args.action_space,
               "cameras": [c for c in args.cameras.split(",") if c]}
    if policy is None:
        policy = load_policy(args.policy, options, args.loader)
    token = args.token or os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    if not (args.token or os.environ.get(TOKEN_ENV)):
        print(f"generated token (pass it to the client): {token}", file=sys.stderr)
    config = ServerConfig(host=args.host, port=args.port, token=token,
                          max_message_bytes=int(args.max_message_mb * 2**20))
    # The server's log (warm-up time, address, connections, errors) is the command's stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    server = PolicyServer(policy, config)
    print(f"warming up {policy.metadata.name} (one inference on a dummy observation)", file=sys.stderr)
    try:
        asyncio.run(server.serve_async())
    except KeyboardInterrupt:
        pass
    return 0
