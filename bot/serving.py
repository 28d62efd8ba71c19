"""Serving the app within the process's file descriptors, so idle sockets cannot starve /healthz and ingest.

Each open connection holds a descriptor; the default soft limit is often 1,024. ``ackbot serve`` raises the soft
RLIMIT_NOFILE to the hard limit at start, keeps a reserve of descriptors for the database pool, outbound HTTP and
files, and caps open client connections below the rest: once the connections reach EVICT_AT of the cap, each new
one closes the oldest (an idle keep-alive or never-used socket closes at once, a busy one after its answer), and
keep-alive connections idle for KEEPALIVE_TIMEOUT seconds are closed in any case. A flood of idle connections
therefore costs the flood its oldest sockets, never the newest caller its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from bot.handlers.http import Handler

log = logging.getLogger("ackbot.serve")


# Descriptors kept back from client connections: the database pool, outbound channels, Slack, logs, files.
RESERVED_DESCRIPTORS = 128
# The share of the cap at which a new connection makes the oldest one close.
EVICT_AT = 0.9
# Seconds an idle keep-alive connection stays open (aiohttp's default is 75).
KEEPALIVE_TIMEOUT = 15.0


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as far as the system allows); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        for wanted in (target, 1 << 20, 65536):
            if wanted <= soft:
                break
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                continue  # some systems cap below the hard limit (macOS: OPEN_MAX): try a smaller one
            soft = wanted
            break
    return soft


def connection_cap(open_files: int) -> int:
    """The most client connections for a process allowed open_files descriptors."""
    reserve = max(RESERVED_DESCRIPTORS, open_files // 10)
    return max(16, open_files - reserve)


@dataclass
class ConnectionLimiter:
    """A protocol factory around aiohttp's low-level server that keeps open connections under cap.

    Near the cap, each new connection force-closes the oldest idle ones: those with no request being handled, as
    the middleware from track() records. A connection in the middle of a request is left to finish.
    """

    server: web.Server
    cap: int
    busy: set[object] = field(default_factory=set)
    evicted: int = 0

    @staticmethod
    def track_into(app: web.Application, busy: set[object]) -> None:
        """Keep in busy the connections of app that are handling a request (call before the app starts)."""

        @web.middleware
        async def mark_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
            transport = request.transport
            busy.add(transport)
            try:
                return await handler(request)
            finally:
                busy.discard(transport)

        app.middlewares.append(mark_busy)

    def __call__(self) -> web.RequestHandler:
        connections = self.server.connections
        excess = len(connections) + 1 - int(self.cap * EVICT_AT)
        if excess > 0:
            # Oldest first (the server keeps them in the order they came): the likeliest to be idle for good.
            idle = [handler for handler in connections if handler.transport not in self.busy][:excess]
            for handler in idle:
                handler.force_close()
            self.evicted += len(idle)
            if idle and (self.evicted == len(idle) or self.evicted % 1000 < len(idle)):
                log.warning(
                    "%d open connections, near the cap of %d: closing the oldest idle ones (%d closed so far)",
                    len(connections),
                    self.cap,
                    self.evicted,
                )
        return self.server()


async def serve(app: web.Application, *, host: str, port: int, connections: int | None = None) -> None:
    """Run app on host:port until SIGINT or SIGTERM, with the file-descriptor limits above."""
    open_files = raise_open_files_limit()
    cap = connections if connections is not None else connection_cap(open_files)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT, handle_signals=False)
    busy: set[object] = set()
    ConnectionLimiter.track_into(app, busy)
    await runner.setup()
    limiter = ConnectionLimiter(runner.server, cap, busy) if runner.server is not None else None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows' default loop
            loop.add_signal_handler(signum, stop.set)
    factory: Callable[[], web.RequestHandler] = limiter or runner.server  # type: ignore[assignment]
    listener = await loop.create_server(factory, host, port, reuse_address=True, backlog=min(cap, 4096))
    log.info("serving on %s:%d: open files %d, at most %d client connections", host, port, open_files, cap)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
