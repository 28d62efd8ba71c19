"""SQLAlchemy's aiosqlite adapter, with each statement taking one trip to the connection's thread instead of four.

aiosqlite runs sqlite3 in a thread of its own and every call into it is a trip there and back through the event
loop. SQLAlchemy's adapter makes four for a statement that returns rows (create the cursor, execute, fetch all,
close) and three for one that does not. In a busy process each trip waits its turn in the event loop, and a
write transaction holds SQLite's one write lock for all of them, so the trips, more than the SQL, limit how many
write transactions a second one process can commit. Here the cursor is made, executed, read to the end and
closed in one function run on aiosqlite's thread; what SQLAlchemy asks of the cursor afterwards (description,
rowcount, lastrowid, the rows) was copied out in that same trip.

Server-side cursors (stream results) keep SQLAlchemy's own class. Database passes this module to the engine.
"""

from __future__ import annotations

import collections
import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import immutabledict
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any], int, int | None]
# The name the audit appender calls (core/store/audit.py: SQLITE_SHA256).
SQLITE_SHA256 = "ackbot_sha256"


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """On aiosqlite's thread: run one statement and return everything the adapter will ask of its cursor."""
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


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose execute is one trip to aiosqlite's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor is made here (that would be a trip of its own): _run makes and closes its own.
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

    async def _trip(self, operation: str, parameters: Any, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        async with self._adapt_connection._execute_mutex:
            # aiosqlite's own queueing (Connection._execute): the function runs on its thread, in order.
            outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, operation, parameters, many
            )
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._trip(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        await self._trip(operation, seq_of_parameters, True)

    async def _async_soft_close(self) -> None:
        return  # the sqlite3 cursor was closed on its thread already

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def rollback(self) -> None:
        # The pool rolls back every connection it takes back, committed or not: with no transaction open (the
        # flag is a plain read, safe from this thread) there is nothing to roll back and no trip to make.
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        if connection._connection is not None and not connection._conn.in_transaction:
            return
        super().rollback()

    _cursor_cls: type[AsyncAdapt_aiosqlite_cursor] = OneTripCursor


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect expects, handing out OneTripConnections."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        connection = OneTripConnection(self, adapted._connection)
        # The audit log's appender has SQLite compute each row's hash (core/store/audit.py).
        await_(adapted._connection.create_function(SQLITE_SHA256, 1, _sha256_hex, deterministic=True))
        return connection


def dbapi() -> OneTripDBAPI:
    """The module to pass as create_async_engine(module=...) for sqlite+aiosqlite URLs."""
    return OneTripDBAPI(aiosqlite, sqlite3)
