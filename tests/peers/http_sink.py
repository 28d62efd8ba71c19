"""A fake HTTP receiver on loopback: records each request exactly and answers as it is told.

    async with HttpSink() as sink:
        sink.enqueue(Reply(429, headers={"Retry-After": "7"}))   # the next request gets this
        sink.always(Reply.json({"key": "OPS-1"}, status=201), path="/rest/api/3/issue")
        sink.default = Reply(202)                                  # everything else
        ... post to sink.url("/hook") ...
        [request] = sink.requests                                  # method, path, headers, raw body

Besides answering, a reply can hang (the client's time-out fires) or reset the connection (TCP RST).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass
class Reply:
    """One answer: a status, headers and body; or a hang; or a connection reset."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    action: Literal["respond", "hang", "reset"] = "respond"
    delay: float = 0.0

    @classmethod
    def json(cls, document: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        """A JSON answer."""
        return cls(status, json.dumps(document), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        """A text/plain answer."""
        return cls(status, text, {"Content-Type": "text/plain", **(headers or {})})

    @classmethod
    def hang(cls, seconds: float = 30.0) -> Reply:
        """Say nothing for a while (the client's time-out should fire first)."""
        return cls(action="hang", delay=seconds)

    @classmethod
    def reset(cls) -> Reply:
        """Drop the connection with a TCP reset, without answering."""
        return cls(action="reset")


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    # When its headers had arrived (time.monotonic()): what a receiver's rate limit counts.
    at: float = 0.0

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@dataclass
class _Rule:
    reply: Reply
    method: str | None
    path: str | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path == path)


class HttpSink:
    """An aiohttp server on 127.0.0.1 (a free port) that records requests and replies as scripted."""

    def __init__(self, default: Reply | None = None, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.default = default or Reply(200, "ok")
        self.requests: list[Received] = []
        self._once: list[_Rule] = []
        self._always: list[_Rule] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._arrived = asyncio.Condition()

    # ------------------------------------------------------------ script

    def enqueue(self, *replies: Reply, method: str | None = None, path: str | None = None) -> None:
        """Answer the next matching requests with these replies, one each, in order."""
        self._once.extend(_Rule(r, method, path) for r in replies)

    def always(self, reply: Reply, *, method: str | None = None, path: str | None = None) -> None:
        """Answer every matching request with this reply (after one-shot replies; the latest rule wins)."""
        self._always.insert(0, _Rule(reply, method, path))

    def _reply_for(self, method: str, path: str) -> Reply:
        for i, rule in enumerate(self._once):
            if rule.matches(method, path):
                del self._once[i]
                return rule.reply
        for rule in self._always:
            if rule.matches(method, path):
                return rule.reply
        return self.default

    # ------------------------------------------------------------ life cycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """A URL on this sink."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    async def start(self) -> HttpSink:
        """Listen on a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Stop listening; hanging handlers are released."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HttpSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until at least count requests arrived (bound it with asyncio.timeout); return them all."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # ------------------------------------------------------------ serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        body = await request.read()
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        self.requests.append(Received(request.method, request.path, request.query_string, headers, body, at))
        async with self._arrived:
            self._arrived.notify_all()
        reply = self._reply_for(request.method, request.path)
        if reply.action == "hang":
            try:
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
            except TimeoutError:
                pass
            return web.Response(status=504, text="hung")
        if reply.action == "reset":
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            # Nothing can be written any more; aiohttp drops this response on the closed transport.
            return web.Response(status=500)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        data = reply.body.encode("utf-8") if isinstance(reply.body, str) else reply.body
        return web.Response(status=reply.status, body=data, headers=reply.headers)
