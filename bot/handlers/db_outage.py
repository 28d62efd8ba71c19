"""The database is down: every request that needs it gets a 503 with Retry-After, the log gets one line.

Senders such as Alertmanager retry a 503 and drop a 500's alerts. While the database is unreachable, a request
that fails on it is answered 503 and counted; the first failure of an outage is logged (one WARNING line, no
traceback), a background probe pings the database every PROBE_INTERVAL seconds and logs the recovery, with how
long the outage lasted and how many requests it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

import asyncpg
from aiohttp import web
from sqlalchemy import exc as sa_exc

from core.url_redaction import redact_urls

log = logging.getLogger("ackbot.database")

# The failures that mean "the database cannot be reached or cannot take work now", not "this request is wrong":
# SQLAlchemy's connection-level errors, asyncpg's connection and operator-intervention classes (shutting down,
# starting up, too many connections), and the socket errors a refused or reset connection surfaces as.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    ConnectionError,
    TimeoutError,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether exc, or what it was raised from, says the database is unreachable."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, _UNAVAILABLE):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def describe(exc: BaseException) -> str:
    """One line naming the failure, for the log and /readyz: no traceback, no credentials."""
    text = redact_urls(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class DatabaseOutage:
    """The state of the current outage, if any: one per app."""

    PROBE_INTERVAL: ClassVar[float] = 1.0
    # Seconds a client is told to wait before retrying.
    RETRY_AFTER: ClassVar[int] = 2

    def __init__(self) -> None:
        self.since: float | None = None
        self.refused = 0
        self.reason = ""
        self._probe: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException, ping: Callable[[], Awaitable[None]]) -> None:
        """A request failed on the database: start the outage (one log line) or count it."""
        self.refused += 1
        self.reason = describe(exc)
        if self.since is not None:
            return
        self.since = time.monotonic()
        log.warning("the database is unreachable (%s): answering 503 until it is back", self.reason)
        self._probe = asyncio.get_running_loop().create_task(self._wait_for_recovery(ping), name="ackbot-db-probe")

    def recovered(self) -> None:
        if self.since is None:
            return
        lasted = time.monotonic() - self.since
        log.warning("the database is reachable again after %.1fs; %d requests were answered 503", lasted, self.refused)
        self.since, self.refused, self.reason = None, 0, ""

    async def _wait_for_recovery(self, ping: Callable[[], Awaitable[None]]) -> None:
        while self.since is not None:
            await asyncio.sleep(self.PROBE_INTERVAL)
            try:
                await asyncio.wait_for(ping(), self.PROBE_INTERVAL * 5)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self.reason = describe(exc)
                continue
            self.recovered()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
            self._probe = None


DB_OUTAGE: web.AppKey[DatabaseOutage] = web.AppKey("db_outage", DatabaseOutage)
