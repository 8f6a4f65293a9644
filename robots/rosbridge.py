"""A small rosbridge v2 client (asyncio ``websockets``) usable from synchronous code.

Why our own: roslibpy pulls Twisted and cannot reconnect in the same process after
``terminate()`` (its issues 56, 94, 121). This client owns an event loop in a background thread
and offers blocking methods around it:

- ``subscribe``/``advertise`` are remembered and re-sent after every reconnect;
- incoming messages land in a latest-message cache with their arrival time
  (``time.monotonic()``), so callers can refuse stale data;
- ``call_service`` matches responses by id, with a timeout; both failure shapes seen in the
  wild are errors: ``{"op": "status", "level": "error", "id": ...}`` and
  ``{"op": "service_response", "result": false}``;
- the connection is re-established with exponential backoff; pending service calls fail at
  once when it drops;
- ``publish`` while disconnected returns False and is *not* queued: a command replayed after a
  reconnect would be stale, and stale motion commands are unsafe.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

log = logging.getLogger(__name__)

MessageCallback = Callable[[dict[str, Any], float], None]
"""``callback(msg, arrival_time)``; runs on the bridge thread, so it must be quick."""


class RosbridgeError(RuntimeError):
    """The bridge reported a failure (status error, or a service call answered result: false)."""


@dataclass
class CachedMessage:
    """The newest message on a topic and when it arrived."""

    msg: dict[str, Any]
    arrival: float
    """``time.monotonic()`` when the message was received."""
    count: int
    """How many messages this topic has received since the client started."""

    @property
    def age(self) -> float:
        return time.monotonic() - self.arrival


@dataclass
class _Subscription:
    topic: str
    msg_type: str
    queue_length: int
    throttle_rate_ms: int
    callbacks: list[MessageCallback] = field(default_factory=list)

    def op(self) -> dict[str, Any]:
        return {"op": "subscribe", "id": f"sub:{self.topic}", "topic": self.topic, "type": self.msg_type,
                "queue_length": self.queue_length, "throttle_rate": self.throttle_rate_ms}


@dataclass
class BridgeConfig:
    """How to reach and keep a rosbridge connection."""

    url: str = "ws://127.0.0.1:9090"
    """rosbridge websocket URL."""
    connect_timeout_s: float = 3.0
    """Opening handshake timeout for one attempt."""
    backoff_initial_s: float = 0.1
    """First delay before reconnecting; doubles after each failure."""
    backoff_max_s: float = 5.0
    """Upper bound of the reconnect delay."""
    service_timeout_s: float = 2.0
    """Default timeout of a service call (also sent to the bridge)."""
    max_message_bytes: int = 32 * 2**20
    """Largest incoming frame (camera images arrive base64-encoded)."""


class RosbridgeClient:
    """A rosbridge v2 client with its own event-loop thread; all public methods are blocking."""

    def __init__(self, config: BridgeConfig | None = None) -> None:
        self.config = config or BridgeConfig()
        self.connects = 0
        """How many times a connection was established (1 + reconnects)."""
        self._subs: dict[str, _Subscription] = {}
        self._adverts: dict[str, str] = {}
        self._cache: dict[str, CachedMessage] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._connected = threading.Event()
        self._closing = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rosbridge", daemon=True)
        self._task: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait_s: float | None = None) -> bool:
        """Start connecting in the background; optionally wait until connected."""
        if not self._thread.is_alive():
            self._thread.start()
            self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        return self.wait_connected(wait_s) if wait_s is not None else self.connected

    def close(self) -> None:
        """Disconnect and stop the thread (idempotent)."""
        if self._closing:
            return
        self._closing = True
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)

    async def _shutdown(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    # ------------------------------------------------------------------ public API
    def subscribe(self, topic: str, msg_type: str, *, queue_length: int = 1, throttle_rate_ms: int = 0,
                  callback: MessageCallback | None = None) -> None:
        """Subscribe (now if connected, and again after every reconnect)."""
        with self._lock:
            sub = self._subs.get(topic)
            if sub is None:
                sub = self._subs[topic] = _Subscription(topic, msg_type, queue_length, throttle_rate_ms)
            if callback is not None:
                sub.callbacks.append(callback)
        self._send_if_connected(sub.op())

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._subs.pop(topic, None)
        self._send_if_connected({"op": "unsubscribe", "id": f"sub:{topic}", "topic": topic})

    def advertise(self, topic: str, msg_type: str) -> None:
        """Advertise (now if connected, and again after every reconnect)."""
        with self._lock:
            self._adverts[topic] = msg_type
        self._send_if_connected({"op": "advertise", "topic": topic, "type": msg_type})

    def publish(self, topic: str, msg: dict[str, Any]) -> bool:
        """Publish on an advertised topic; False (and nothing queued) when disconnected."""
        if topic not in self._adverts:
            raise RosbridgeError(f"publish on '{topic}' before advertise()")
        return self._send_if_connected({"op": "publish", "topic": topic, "msg": msg})

    def call_service(self, service: str, srv_type: str, args: dict[str, Any] | None = None,
                     timeout_s: float | None = None) -> dict[str, Any]:
        """Call a service and return its ``values``; raises RosbridgeError, TimeoutError, ConnectionError."""
        timeout = self.config.service_timeout_s if timeout_s is None else timeout_s
        coro = self._call(service, srv_type, args or {}, timeout)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout + 1.0)

    def latest(self, topic: str) -> CachedMessage | None:
        """The newest message received on ``topic`` (None before the first)."""
        return self._cache.get(topic)

    def wait_for_message(self, topic: str, timeout_s: float, after: int = 0) -> CachedMessage:
        """Block until ``topic`` has received more than ``after`` messages."""
        deadline = time.monotonic() + timeout_s
        while True:
            cached = self._cache.get(topic)
            if cached is not None and cached.count > after:
                return cached
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no message on '{topic}' within {timeout_s} s")
            time.sleep(0.002)

    # ------------------------------------------------------------------ loop side
    def _send_if_connected(self, op: dict[str, Any]) -> bool:
        if not self.connected:
            return False
        asyncio.run_coroutine_threadsafe(self._send(op), self._loop)
        return True

    async def _send(self, op: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            await ws.send(json.dumps(op))
        except ConnectionClosed:
            pass  # the receive loop notices and reconnects

    async def _call(self, service: str, srv_type: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._ws is None:
            raise ConnectionError(f"not connected to {self.config.url}")
        rid = f"call:{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[rid] = fut
        try:
            await self._send({"op": "call_service", "id": rid, "service": service, "type": srv_type,
                              "args": args, "timeout": timeout})
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"service {service} did not answer within {timeout} s") from exc
        finally:
            self._pending.pop(rid, None)

    async def _run(self) -> None:
        """Connect, replay subscriptions/adverts, receive; on loss, back off and repeat."""
        backoff = self.config.backoff_initial_s
        while not self._closing:
            try:
                async with connect(self.config.url, open_timeout=self.config.connect_timeout_s,
                                   max_size=self.config.max_message_bytes, compression=None) as ws:
                    self._ws = ws
                    self.connects += 1
                    backoff = self.config.backoff_initial_s
                    await self._replay(ws)
                    self._connected.set()
                    async for raw in ws:
                        self._dispatch(raw)
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                log.info("rosbridge connection to %s lost or refused: %s", self.config.url, exc)
            finally:
                self._ws = None
                self._connected.clear()
                self._fail_pending(ConnectionError("rosbridge connection lost"))
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, self.config.backoff_max_s)

    async def _replay(self, ws: ClientConnection) -> None:
        with self._lock:
            ops = [{"op": "advertise", "topic": t, "type": ty} for t, ty in self._adverts.items()]
            ops += [s.op() for s in self._subs.values()]
        for op in ops:
            await ws.send(json.dumps(op))

    def _fail_pending(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("rosbridge sent a frame that is not JSON")
            return
        if not isinstance(msg, dict):
            return
        op = msg.get("op")
        if op == "publish":
            self._on_publish(msg)
        elif op == "service_response":
            self._on_service_response(msg)
        elif op == "status":
            self._on_status(msg)

    def _on_publish(self, msg: dict[str, Any]) -> None:
        topic, body = msg.get("topic"), msg.get("msg")
        if not isinstance(topic, str) or not isinstance(body, dict):
            return
        now = time.monotonic()
        prev = self._cache.get(topic)
        self._cache[topic] = CachedMessage(body, now, (prev.count if prev else 0) + 1)
        sub = self._subs.get(topic)
        for callback in list(sub.callbacks) if sub else []:
            try:
                callback(body, now)
            except Exception:  # a user callback must not kill the receive loop
                log.exception("callback for %s failed", topic)

    def _on_service_response(self, msg: dict[str, Any]) -> None:
        fut = self._pending.get(str(msg.get("id")))
        if fut is None or fut.done():
            return
        values = msg.get("values")
        if msg.get("result") is False:
            fut.set_exception(RosbridgeError(f"service call failed: {values!r}"))
        else:
            fut.set_result(values if isinstance(values, dict) else {"value": values})

    def _on_status(self, msg: dict[str, Any]) -> None:
        fut = self._pending.get(str(msg.get("id")))
        if msg.get("level") == "error" and fut is not None and not fut.done():
            fut.set_exception(RosbridgeError(str(msg.get("msg", "rosbridge error"))))
        else:
            log.log(logging.WARNING if msg.get("level") in ("error", "warning") else logging.DEBUG,
                    "rosbridge status: %s", msg.get("msg"))
