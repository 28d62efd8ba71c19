"""SQLite: SQLAlchemy's own aiosqlite dialect, and the hot statements run at once on the event loop's thread.

aiosqlite runs sqlite3 in a thread of its own, and every call into it is a trip there and back through the event
loop; SQLAlchemy's adapter makes three or four for a statement. A write transaction holds SQLite's one write lock
across all of them, so on a busy loop the trips, not the SQL, decided how many decisions a second one process could
commit, while the statements themselves take tens of microseconds (WAL, synchronous=NORMAL: a commit is a write to
the page cache).

So the engine's connections are opened here with the sqlite3 connection under aiosqlite's in hand (sqlite3's public
factory argument), and on the two that Database keeps (the write transactions' and the reads') SqliteDirect sends
the hot statements (pg_direct.Statement, BEGIN IMMEDIATE, COMMIT) on it directly, at once on the loop's thread: no
trip at all. Everything else, the ORM's statements included, goes through SQLAlchemy and aiosqlite as usual. The
two never overlap on a connection: a transaction's statements are awaited one after another, and a rollback after
a cancellation goes through aiosqlite's queue, behind whatever it may still be running.

SQLite's own busy handler would sleep on the loop's thread, so those two connections run with busy_timeout 0 and a
direct statement that meets another process's lock (a CLI command writing, say) is retried after an asyncio sleep,
for up to BUSY_TIMEOUT seconds, as busy_timeout would have. SQLAlchemy's statements on the writer run inside its
BEGIN IMMEDIATE, which holds the lock already; the pool's other connections wait in aiosqlite's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import ConnectionPoolEntry

from core.store import pg_direct

_T = TypeVar("_T")
# The name the audit appender calls (core/store/audit.py: SQLITE_SHA256).
SQLITE_SHA256 = "ackbot_sha256"
# How long a statement waits while another process holds the lock it needs.
BUSY_TIMEOUT = 10.0
# The first pause of a direct statement after SQLITE_BUSY, doubled up to BUSY_MAX_PAUSE.
BUSY_FIRST_PAUSE = 0.001
BUSY_MAX_PAUSE = 0.1
# A WAL snapshot that went stale cannot be cured by waiting: the transaction has to start again.
_BUSY_SNAPSHOT = 517
# The sqlite3 connection under each kept aiosqlite connection.
_RAW: weakref.WeakKeyDictionary[Any, sqlite3.Connection] = weakref.WeakKeyDictionary()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prepare_connection(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """The engine's connect listener (Database): the function the audit log's appender has SQLite compute each
    row's hash with (core/store/audit.py)."""
    dbapi_connection.create_function(SQLITE_SHA256, 1, _sha256_hex, deterministic=True)


def connection_opener(database: str) -> Callable[[], Awaitable[Any]]:
    """The engine's async_creator (Database): an aiosqlite connection whose sqlite3 connection SqliteDirect can
    reach, made with sqlite3's public factory argument."""

    async def open_connection() -> Any:
        made: list[sqlite3.Connection] = []

        def factory(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            raw = sqlite3.Connection(*args, **kwargs)
            made.append(raw)
            return raw

        def construct() -> None:
            made_driver.append(
                aiosqlite.connect(database, factory=factory, timeout=BUSY_TIMEOUT, check_same_thread=False)
            )

        # aiosqlite's thread inherits the daemon flag of the thread that constructs the connection: made in a daemon
        # thread, a connection left open cannot keep the process from exiting (as SQLAlchemy's own creator ensures).
        made_driver: list[Any] = []
        constructor = threading.Thread(target=construct, daemon=True)
        constructor.start()
        constructor.join()
        driver = await made_driver[0]
        _RAW[driver] = made[0]
        return driver

    return open_connection


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # a sqlite3 without error codes: go by the message
        return "database is locked" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and code != _BUSY_SNAPSHOT


async def _patiently(call: Callable[[], _T]) -> _T:
    """Run a sqlite3 call now; while it meets another connection's lock, pause on the event loop and try again.

    A statement that fails with SQLITE_BUSY did nothing, so running it again is safe. The call itself never
    suspends: awaiting this costs no turn of the event loop unless it has to wait.
    """
    deadline = 0.0
    pause = BUSY_FIRST_PAUSE
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            now = time.monotonic()
            deadline = deadline or now + BUSY_TIMEOUT
            if now >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, BUSY_MAX_PAUSE)


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> list[Any]:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
            return []
        cursor.execute(operation, parameters)
        return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


class SqliteDirect:
    """One of Database's kept SQLite connections, for statements sent without SQLAlchemy (pg_direct.Statement, and
    the write transactions' BEGIN IMMEDIATE and COMMIT), at once on the loop's thread, inside whatever transaction
    the connection has begun."""

    def __init__(self, conn: AsyncConnection, adapted: Any, raw: sqlite3.Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self._adapted = adapted  # SQLAlchemy's DBAPI connection, for its judgement of a lost one
        self._driver: Any = adapted.driver_connection  # aiosqlite's
        self._raw = raw

    @classmethod
    async def of(cls, conn: AsyncConnection) -> SqliteDirect:
        """The sqlite3 connection under SQLAlchemy's conn, made by kept_connection_opener."""
        adapted = (await conn.get_raw_connection()).dbapi_connection
        assert adapted is not None
        raw = _RAW[adapted.driver_connection]
        # Its direct statements wait for another process's lock on the loop (_patiently), not in SQLite's handler.
        raw.execute("PRAGMA busy_timeout = 0")
        return cls(conn, adapted, raw)

    async def fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        """Run a statement with ? parameters; its rows (tuples)."""
        return await self._send(sql, args, False)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per parameter list."""
        await self._send(sql, args, True)

    async def execute(self, sql: str) -> None:
        """Run a statement without parameters or rows (BEGIN IMMEDIATE, COMMIT)."""
        await self._send(sql, (), False)

    async def rollback(self) -> None:
        """Roll back, through aiosqlite's queue: after whatever a cancelled statement may still be running there."""
        await self._driver.rollback()

    @property
    def in_transaction(self) -> bool:
        """Whether SQLite has a transaction open on this connection."""
        return self._raw.in_transaction

    async def _send(self, sql: str, args: Any, many: bool) -> list[Any]:
        raw = self._raw
        try:
            return await _patiently(lambda: _run(raw, sql, args, many))
        except Exception as error:
            await pg_direct.raise_as_sqlalchemy(
                self.conn, self._adapted, error, sql, (args[0] if many and args else args) or ()
            )
