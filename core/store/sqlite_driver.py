"""SQLite under SQLAlchemy's asyncio engine, with every statement run at once on the event loop's thread.

aiosqlite runs sqlite3 in a thread of its own and every call into it is a trip there and back through the event
loop: SQLAlchemy's adapter for it makes four for a statement that returns rows and three for one that does not. In a
busy process each trip waits its turn behind every other ready callback, and a write transaction holds SQLite's one
write lock across all of them: ten statements meant ten turns of a loaded event loop with the lock held, so the
trips, not the SQL, decided how many decisions a second one process could commit. The statements themselves take
tens of microseconds (WAL, synchronous=NORMAL: a commit is a write to the page cache), less than one trip costs.

So SQLite is reached here without aiosqlite. InlineDialect is SQLAlchemy's own dialect for the standard library's
sqlite3 (SQLiteDialect_pysqlite), declared asynchronous so that SQLAlchemy's AsyncEngine takes it, and registered
with SQLAlchemy's dialect registry as sqlite+ackbot; Database maps the configured sqlite+aiosqlite:// URL to it
(engine_url). SQLAlchemy runs a dialect's driver calls inside its greenlet on the event loop's thread, and here a
statement runs right there, read to the end at once: a transaction no longer yields to the loop between its
statements, and no result holds a statement (or the snapshot of a read) open in SQLite once execute() returned.

Each statement still passes through SQLAlchemy's await, by the public AdaptedConnection.run_async: an asyncio
engine insists on one per AsyncConnection.execute (its AwaitRequired check refuses a driver that never awaits),
and it is what lets a statement wait for a lock without blocking the loop. SQLite's own busy handler would sleep
inside the call and stall the loop, so connections run with busy_timeout 0 and a statement that meets another
process's lock (a CLI command writing, say) is retried after an asyncio sleep, for up to BUSY_BUDGET seconds, as
busy_timeout would have. The await costs the greenlet one switch there and back, not a turn of the event loop:
the awaited coroutine does not suspend unless it has to wait. Streamed results (stream_results) read from sqlite3's
cursor as SQLAlchemy asks.

Two points of contact with SQLAlchemy are not its documented API, because SQLAlchemy has none for them: the slot
in which AdaptedConnection (which has no constructor) keeps the driver's connection for driver_connection and
run_async, set once in InlineConnection.__init__ and checked at import; and the method SQLAlchemy's asyncio
extension calls on every asynchronous driver's cursor (InlineCursor._async_soft_close).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, AdaptedConnection, make_url
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import ConnectionPoolEntry

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
# The URL scheme of InlineDialect (registered below), and the one users configure.
DRIVERNAME = "sqlite+ackbot"
CONFIGURED_DRIVERNAME = "sqlite+aiosqlite"


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
    suspends: awaiting this costs no turn of the event loop unless it has to wait (under SQLAlchemy, the greenlet
    one switch there and back).
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
    """Run one statement and return everything a cursor will be asked of it."""
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


class InlineCursor:
    """A DBAPI cursor whose statement runs at once on the calling thread and is read to the end."""

    __slots__ = ("arraysize", "connection", "description", "lastrowid", "rowcount", "rows")

    def __init__(self, connection: InlineConnection) -> None:
        self.connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self.rows: collections.deque[Any] = collections.deque()

    def execute(self, operation: str, parameters: Any = None) -> None:
        self.run(operation, parameters, False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self.run(operation, seq_of_parameters, True)

    def run(self, operation: str, parameters: Any, many: bool) -> None:
        # sqlite3's errors are this DBAPI's: SQLAlchemy wraps them as it does for any driver.
        outcome = self.connection.run_async(lambda raw: _patiently(lambda: _run(raw, operation, parameters, many)))
        self.description, rows, self.rowcount, self.lastrowid = outcome
        self.rows = collections.deque(rows)

    def fetchone(self) -> Any:
        rows = self.rows
        return rows.popleft() if rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self.rows
        return [rows.popleft() for _ in range(min(len(rows), self.arraysize if size is None else size))]

    def fetchall(self) -> list[Any]:
        rows = list(self.rows)
        self.rows.clear()
        return rows

    def setinputsizes(self, *_sizes: Any) -> None:
        return

    def setoutputsize(self, *_size: Any) -> None:
        return

    def close(self) -> None:
        self.rows.clear()

    async def _async_soft_close(self) -> None:
        # Called by SQLAlchemy's asyncio extension on the cursor of every asynchronous driver (since 2.0.44) for a
        # result that leaves its greenlet with rows unread, so that the driver can read or release them there: not
        # a name of SQLAlchemy's that this code uses, the one it looks for on ours. Every row was read already.
        return


class StreamingCursor:
    """A server-side cursor (stream_results): sqlite3's own, its rows fetched as SQLAlchemy asks for them."""

    __slots__ = ("arraysize", "connection", "cursor")

    def __init__(self, connection: InlineConnection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.cursor: sqlite3.Cursor | None = None

    def execute(self, operation: str, parameters: Any = None) -> None:
        def run(raw: sqlite3.Connection) -> sqlite3.Cursor:
            return raw.execute(operation, () if parameters is None else parameters)

        self.cursor = self.connection.run_async(lambda raw: _patiently(lambda: run(raw)))

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        raise NotImplementedError("a server-side cursor runs one statement")

    @property
    def description(self) -> Any:
        return self.cursor.description if self.cursor is not None else None

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount if self.cursor is not None else -1

    @property
    def lastrowid(self) -> int | None:
        return self.cursor.lastrowid if self.cursor is not None else None

    def fetchone(self) -> Any:
        return self.cursor.fetchone() if self.cursor is not None else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        if self.cursor is None:
            return []
        return self.cursor.fetchmany(self.arraysize if size is None else size)

    def fetchall(self) -> list[Any]:
        return self.cursor.fetchall() if self.cursor is not None else []

    def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None


class InlineConnection(AdaptedConnection):
    """The DBAPI connection InlineDialect hands SQLAlchemy: a sqlite3 connection (driver_connection), its
    statements run on the calling thread under SQLAlchemy's await (run_async, see the module's docstring)."""

    __slots__ = ()

    def __init__(self, raw: sqlite3.Connection) -> None:
        # AdaptedConnection keeps the driver's connection here for its driver_connection and run_async, and has no
        # constructor to set it (checked at import below).
        self._connection = raw  # type: ignore[assignment]

    def cursor(self, server_side: bool = False) -> InlineCursor | StreamingCursor:
        return StreamingCursor(self) if server_side else InlineCursor(self)

    def commit(self) -> None:
        if self.driver_connection.in_transaction:
            self.run_async(lambda raw: _patiently(raw.commit))

    def rollback(self) -> None:
        # The pool rolls back every connection it takes back, committed or not: with no transaction open (or the
        # connection closed) there is nothing to end, and no await to pay for it.
        try:
            in_transaction = self.driver_connection.in_transaction
        except sqlite3.ProgrammingError:
            return
        if in_transaction:
            self.run_async(lambda raw: _patiently(raw.rollback))

    def close(self) -> None:
        self.driver_connection.close()

    @property
    def isolation_level(self) -> str | None:
        return self.driver_connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self.driver_connection.isolation_level = value

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        self.driver_connection.create_function(*args, **kwargs)


def _check_adapted_connection() -> None:
    # InlineConnection relies on where AdaptedConnection keeps the driver's connection: fail here, at import, if a
    # SQLAlchemy release moved it, rather than at the first statement.
    raw = sqlite3.connect(":memory:")
    try:
        adapted = InlineConnection(raw)
        if adapted.driver_connection is not raw:
            raise ImportError("this SQLAlchemy's AdaptedConnection does not keep the driver's connection as expected")
    finally:
        raw.close()


_check_adapted_connection()


# SQLAlchemy's execution context for SQLite (the dialect's own, as it names it), which this one extends.
if TYPE_CHECKING:
    _SQLiteExecutionContext = DefaultExecutionContext
else:
    _SQLiteExecutionContext = SQLiteDialect_pysqlite.execution_ctx_cls


class InlineExecutionContext(_SQLiteExecutionContext):
    def create_server_side_cursor(self) -> DBAPICursor:
        # Streamed results (AsyncConnection.stream, stream_results).
        return self.root_connection.connection.cursor(server_side=True)


class InlineDialect(SQLiteDialect_pysqlite):
    """SQLAlchemy's sqlite3 dialect, declared asynchronous: sqlite3 runs inline, on the event loop's thread."""

    driver = "ackbot"
    supports_statement_cache = True
    is_async = True
    # Closing a sqlite3 connection waits on nothing: the pool may close one wherever it has to (terminate).
    has_terminate = True
    supports_server_side_cursors = True
    execution_ctx_cls = InlineExecutionContext  # type: ignore[assignment]

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        # As SQLAlchemy's aiosqlite dialect: a queue the event loop can wait on for a file, one connection in memory.
        database = url.database or ""
        if database and database != ":memory:" and url.query.get("mode") != "memory":
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool

    def connect(self, *cargs: Any, **cparams: Any) -> DBAPIConnection:
        # Opened and used on the event loop's thread; the pool may still close one from another (a collected one).
        cparams["check_same_thread"] = False
        # busy_timeout 0: SQLite's busy handler would sleep on the event loop's thread; _patiently waits instead.
        cparams["timeout"] = 0
        return InlineConnection(sqlite3.connect(*cargs, **cparams))  # type: ignore[return-value]

    def get_driver_connection(self, connection: DBAPIConnection) -> Any:
        return connection.driver_connection

    def do_terminate(self, dbapi_connection: DBAPIConnection) -> None:
        dbapi_connection.close()


registry.register(DRIVERNAME.replace("+", "."), __name__, InlineDialect.__name__)


def engine_url(url: str) -> URL | str:
    """The URL to give SQLAlchemy for a configured one: sqlite+aiosqlite:// becomes this module's dialect."""
    parsed = make_url(url)
    if parsed.drivername != CONFIGURED_DRIVERNAME:
        return url
    return parsed.set(drivername=DRIVERNAME)


def prepare_connection(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """The engine's connect listener (Database): the function the audit log's appender has SQLite compute each
    row's hash with (core/store/audit.py)."""
    dbapi_connection.create_function(SQLITE_SHA256, 1, _sha256_hex, deterministic=True)


class InlineDirect:
    """A session's SQLite connection for statements sent without SQLAlchemy (pg_direct.Statement, and the write
    transactions' BEGIN IMMEDIATE, COMMIT and ROLLBACK), at once on the loop's thread as every statement here is,
    inside whatever transaction the connection has begun; each waits for another's lock on the event loop."""

    def __init__(self, conn: AsyncConnection, adapted: InlineConnection) -> None:
        self.conn = conn
        self._adapted = adapted
        self._raw: sqlite3.Connection = adapted.driver_connection

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
        return self._raw.in_transaction

    async def _send(self, sql: str, args: Any, many: bool) -> list[Any]:
        raw = self._raw
        try:
            return (await _patiently(lambda: _run(raw, sql, args, many)))[1]
        except Exception as error:
            await pg_direct.raise_as_sqlalchemy(
                self.conn, self._adapted, error, sql, (args[0] if many and args else args) or ()
            )
