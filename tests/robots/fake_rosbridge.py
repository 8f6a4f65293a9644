"""An in-process rosbridge v2 server on loopback, speaking enough of the protocol for tests.

It tracks subscriptions and adverts per connection, records what clients publish, answers
``call_service`` from registered handlers (or with the two failure shapes real bridges use), and
can drop every connection mid-stream to exercise reconnects.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

ServiceHandler = Callable[[dict[str, Any]], tuple[bool, dict[str, Any]]]


class FakeRosbridge:
    """Run with ``start()`` (background thread) and ``stop()``; state is read from the test thread."""

    def __init__(self) -> None:
        self.port = 0
        self.published: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.subscribe_ops: list[dict[str, Any]] = []
        self.advertise_ops: list[dict[str, Any]] = []
        self.services: dict[str, ServiceHandler] = {}
        self.status_error_services: set[str] = set()
        self.silent_services: set[str] = set()
        self.connections = 0
        self._subs: dict[ServerConnection, set[str]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        daemon=True)

    def start(self) -> int:
        self._thread.start()
        assert self._ready.wait(5.0)
        return self.port

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5.0)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, max_size=2**24) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self._subs[ws] = set()
        try:
            async for raw in ws:
                await self._op(ws, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self._subs.pop(ws, None)

    async def _op(self, ws: ServerConnection, op: dict[str, Any]) -> None:
        kind = op.get("op")
        if kind == "subscribe":
            self.subscribe_ops.append(op)
            self._subs[ws].add(op["topic"])
        elif kind == "unsubscribe":
            self._subs[ws].discard(op["topic"])
        elif kind == "advertise":
            self.advertise_ops.append(op)
        elif kind == "publish":
            self.published[op["topic"]].append(op["msg"])
        elif kind == "call_service":
            await self._service(ws, op)

    async def _service(self, ws: ServerConnection, op: dict[str, Any]) -> None:
        name, rid = op["service"], op.get("id")
        if name in self.silent_services:
            return
        if name in self.status_error_services or name not in self.services:
            await ws.send(json.dumps({"op": "status", "level": "error", "id": rid,
                                      "msg": f"service {name} failed"}))
            return
        ok, values = self.services[name](op.get("args", {}))
        await ws.send(json.dumps({"op": "service_response", "id": rid, "service": name,
                                  "result": ok, "values": values}))

    # ------------------------------------------------------------------ test controls
    def send(self, topic: str, msg: dict[str, Any]) -> int:
        """Publish ``msg`` to every client subscribed to ``topic``; returns how many got it."""
        return asyncio.run_coroutine_threadsafe(self._send(topic, msg), self._loop).result(5.0)

    async def _send(self, topic: str, msg: dict[str, Any]) -> int:
        frame = json.dumps({"op": "publish", "topic": topic, "msg": msg})
        sent = 0
        for ws, topics in list(self._subs.items()):
            if topic in topics:
                try:
                    await ws.send(frame)
                    sent += 1
                except ConnectionClosed:
                    pass
        return sent

    def drop_all(self) -> None:
        """Abort every client connection (as a bridge crash or network cut would)."""
        async def _drop() -> None:
            for ws in list(self._subs):
                ws.transport.abort()
        asyncio.run_coroutine_threadsafe(_drop(), self._loop).result(5.0)

    def subscribers(self, topic: str) -> int:
        return sum(topic in t for t in list(self._subs.values()))
