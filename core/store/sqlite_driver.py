"""SQLAlchemy's aiosqlite adapter, with every statement run at once on the event loop's thread.

aiosqlite runs sqlite3 in a thread of its own and every call into it is a trip there and back through the event
loop: SQLAlchemy's adapter makes four for a statement that returns rows and three for one that does not. In a busy
process each trip waits its turn behind every other ready callback, and a write transaction holds SQLite's one
write lock across all of them: ten statements meant ten turns of a loaded event loop with the lock held, so the
trips, not the SQL, decided how many decisions a second one process could commit. The statements themselves take
tens of microseconds (WAL, synchronous=NORMAL: a commit is a write to the page cache), less than one trip costs.

So here a statement runs where SQLAlchemy asks for it, on the loop's thread, and is read to the end at once; a
transaction no longer yields to the loop between its statements. aiosqlite's thread still opens and closes the
connection. SQLite's own busy handler would sleep inside the call and stall the loop, so connections run with
busy_timeout 0 and a statement that meets another process's lock (a CLI command writing, say) is retried after an
asyncio sleep, for up to BUSY_BUDGET seconds, as busy_timeout would have. Server-side cursors (stream results)
keep SQLAlchemy's own class. Database passes this module to the engine.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import immutabledict
from sqlalchemy.util.concurrency import await_

from core.store import pg_direct

_Outcome = tuple[Any, list[Any], int, int | None]
_T = TypeVar("_T")
# The name the audit appender calls (core/store/audit.py: SQLITE_SHA256).
SQLITE_SHA256 = "ackbot_sha256"
# How long a statement keeps retrying while another process holds the lock it needs (busy_timeout's old value).
BUSY_BUDGET = 10.0
# The first pause after SQLITE_BUSY, doubled up to BUSY_MAX_PAUSE.
BUSY_FIRST_PAUSE = 0.001
BUSY_MAX_PAUSE = 0.1
# A WAL snapshot that went stale cannot be cured by waiting: the transaction has to start again.
_BUSY_SNAPSHOT = 517


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # a sqlite3 without error codes: go by the message
        return "database is locked" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and code != _BUSY_SNAPSHOT


async def _patiently(call: Callable[[], _T]) -> _T:
    """Run a sqlite3 call now; while it meets another connection's lock, pause on the event loop and try again.

    A statement that fails with SQLITE_BUSY did nothing, so running it again is safe. The call itself never
    suspends: awaiting this costs SQLAlchemy's greenlet one switch, not a turn of the event loop.
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
            deadline = deadline or now + BUSY_BUDGET
            if now >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, BUSY_MAX_PAUSE)


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """Run one statement and return everything the adapter will ask of its cursor."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        # Read after the rows: for a statement with RETURNING, sqlite3 counts the rows as they are fetched.
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class InlineCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement runs at once on the calling thread, read to the end."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor is made here (that would be a trip to its thread): _run makes and closes its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = immutabledict()
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def _inline(self, operation: str, parameters: Any, many: bool) -> None:
        raw = _raw(self._adapt_connection)
        try:
            outcome = await_(_patiently(lambda: _run(raw, operation, parameters, many)))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        self._inline(operation, parameters, False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        self._inline(operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        return  # the sqlite3 cursor was closed already

    def close(self) -> None:
        self._rows.clear()


def _raw(adapt_connection: AsyncAdapt_dbapi_connection) -> sqlite3.Connection:
    connection: aiosqlite.Connection = adapt_connection._connection  # type: ignore[assignment]
    raw = connection._connection
    if raw is None:
        raise ValueError("no active connection")  # as aiosqlite says it; the adapter maps it to OperationalError
    return raw


class InlineConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    _cursor_cls: type[AsyncAdapt_aiosqlite_cursor] = InlineCursor

    def commit(self) -> None:
        self._end(sqlite3.Connection.commit)

    def rollback(self) -> None:
        self._end(sqlite3.Connection.rollback)

    def _end(self, how: Callable[[sqlite3.Connection], None]) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        raw = connection._connection
        # The pool rolls back every connection it takes back, committed or not: with no transaction open there
        # is nothing to end.
        if raw is None or not raw.in_transaction:
            return
        try:
            await_(_patiently(lambda: how(raw)))
        except Exception as error:
            self._handle_exception(error)


class InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect expects, handing out InlineConnections."""

    def connect(self, *arg: Any, **kw: Any) -> InlineConnection:
        # Made on aiosqlite's thread, used on the event loop's.
        kw["check_same_thread"] = False
        adapted = super().connect(*arg, **kw)
        connection = InlineConnection(self, adapted._connection)
        raw = _raw(connection)
        raw.execute("PRAGMA busy_timeout=0")  # waiting is _patiently's job, off the loop's clock
        # The audit log's appender has SQLite compute each row's hash (core/store/audit.py).
        raw.create_function(SQLITE_SHA256, 1, _sha256_hex, deterministic=True)
        return connection


def dbapi() -> InlineDBAPI:
    """The module to pass as create_async_engine(module=...) for sqlite+aiosqlite URLs."""
    return InlineDBAPI(aiosqlite, sqlite3)


class InlineDirect:
    """A session's SQLite connection for statements sent without SQLAlchemy (pg_direct.Statement), at once on the
    loop's thread as every statement here is, inside whatever transaction the session has begun."""

    def __init__(self, conn: AsyncConnection, adapted: InlineConnection) -> None:
        self.conn = conn
        self._adapted = adapted

    @classmethod
    async def of(cls, conn: AsyncConnection) -> InlineDirect:
        """The driver connection under SQLAlchemy's conn."""
        adapted = (await conn.get_raw_connection()).dbapi_connection
        assert isinstance(adapted, InlineConnection)
        return cls(conn, adapted)

    async def fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        """Run a statement with ? parameters; its rows (tuples)."""
        return await self._send(sql, args, False)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per parameter list."""
        await self._send(sql, args, True)

    async def execute(self, sql: str) -> None:
        """Run a statement without parameters or rows (BEGIN IMMEDIATE, COMMIT, ROLLBACK)."""
        await self._send(sql, None, False)

    @property
    def in_transaction(self) -> bool:
        """Whether SQLite has a transaction open on this connection."""
        return _raw(self._adapted).in_transaction

    async def _send(self, sql: str, args: Any, many: bool) -> list[Any]:
        raw = _raw(self._adapted)
        try:
            return (await _patiently(lambda: _run(raw, sql, args, many)))[1]
        except Exception as error:
            await pg_direct.raise_as_sqlalchemy(self.conn, error, sql, (args[0] if many and args else args) or ())
