"""PostgreSQL: transactions and hot statements sent by asyncpg itself, on the connection under SQLAlchemy's.

SQLAlchemy's execution context, result and greenlet bridge cost more than a hot statement's own work
(docs/performance-history.md), so write transactions (BEGIN, COMMIT, ROLLBACK) and the hot statements are sent
with asyncpg's public API. SQLAlchemy still owns the connection: its pool hands it out and takes it back (pinged
when idle, see core.store.db), and every other statement of the transaction (Core or ORM) runs on the same
connection, which is in AUTOCOMMIT mode so that SQLAlchemy never begins or ends a transaction of its own.

An error of a direct call is raised as SQLAlchemy raises it for its own statements (raise_as_sqlalchemy), so
callers (conflict retries, the HTTP answers) cannot tell the two paths apart.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from sqlalchemy import BindParameter, Executable, String, bindparam, func, literal_column, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection


class DirectConnection:
    """A pooled SQLAlchemy connection in AUTOCOMMIT mode and the asyncpg connection under it."""

    def __init__(self, conn: AsyncConnection, raw: PoolProxiedConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        # The DBAPI connection SQLAlchemy's asyncpg dialect made of asyncpg's (for its judgement of a lost one)...
        self._adapter = raw.dbapi_connection
        # ...and asyncpg's connection itself, which the statements here are sent on.
        self._driver: Any = raw.driver_connection
        # Whether the open transaction was begun by the last commit, for the next write (transaction(begin_next)).
        self.begun_ahead = False

    @classmethod
    async def connect(cls, engine: AsyncEngine) -> DirectConnection:
        """Check a connection out of engine's pool (engine's connections are in AUTOCOMMIT mode)."""
        conn = await engine.connect()
        try:
            return cls(conn, await conn.get_raw_connection())
        except BaseException:
            await conn.close()
            raise

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the server (BEGIN sent, no COMMIT or ROLLBACK yet)."""
        return bool(self._driver.is_in_transaction())

    @property
    def usable(self) -> bool:
        """False once the connection was lost or discarded: its holder checks out another."""
        return not self.conn.invalidated and not self.conn.closed and not self._driver.is_closed()

    async def close(self) -> None:
        """Return the connection to the pool, first rolling back a transaction begun for a group that never came."""
        if not self.usable or self._driver.is_in_transaction():
            await to_completion(self._abandon())
        if not self.usable and not self.conn.invalidated:
            # Found lost (the server went away while it was held): discarded, or the pool would hand it out again
            # at once, unpinged, since it was in use a moment ago; and the pool checks the others (core.store.db).
            await self.conn.invalidate(sa_exc.DisconnectionError("asyncpg's connection was found closed"))
        await self.conn.close()

    @asynccontextmanager
    async def transaction(self, *, begin_next: bool = False) -> AsyncIterator[DirectConnection]:
        """One transaction on this connection: committed on success, rolled back on error. With begin_next, the
        commit also begins the next transaction, in the same round trip."""
        self.begun_ahead = False
        try:
            if not self._driver.is_in_transaction():
                await self.execute("BEGIN")
            yield self
            # A writer that will write again saves the next BEGIN's round trip: both go in one simple query, which
            # PostgreSQL runs in order, answering once the COMMIT is durable and the BEGIN done. A transaction begun
            # that way holds nothing until its first statement (no snapshot, no transaction id); the Keeper rolls
            # it back if no write takes it soon (Keeper.tidy).
            await self.execute("COMMIT; BEGIN" if begin_next else "COMMIT")
            self.begun_ahead = begin_next
        except BaseException:
            await to_completion(self._abandon())
            raise

    async def close_transaction(self) -> None:
        """Roll back the open transaction, if any (one begun ahead that no write took); a lost connection is left
        unusable."""
        self.begun_ahead = False
        await to_completion(self._abandon())

    async def execute(self, sql: str) -> None:
        """Run a statement without parameters or rows (BEGIN, COMMIT, ROLLBACK)."""
        try:
            await self._driver.execute(sql)
        except Exception as error:
            await self._raise_translated(error, sql, ())

    async def fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        """Run a statement with $1, $2... parameters; its rows (asyncpg records: by name or by position)."""
        try:
            return await self._driver.fetch(sql, *args)  # type: ignore[no-any-return]
        except Exception as error:
            await self._raise_translated(error, sql, args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run a statement once for each parameter list, in one round trip; no rows."""
        try:
            await self._driver.executemany(sql, args)
        except Exception as error:
            await self._raise_translated(error, sql, args[0] if args else ())

    async def _abandon(self) -> None:
        # Roll back what the server still holds open. A connection that cannot even do that (lost, or cut off
        # mid-statement by a cancellation) is discarded rather than used again or pooled in an unknown state.
        try:
            if self.usable and self._driver.is_in_transaction():
                await self.execute("ROLLBACK")
        except Exception as error:
            if not self.conn.invalidated:
                await self.conn.invalidate(error)

    async def _raise_translated(self, error: Exception, sql: str, args: Sequence[Any]) -> NoReturn:
        await raise_as_sqlalchemy(self.conn, self._adapter, error, sql, args)


async def raise_as_sqlalchemy(
    conn: AsyncConnection, dbapi_connection: Any, error: Exception, sql: str, args: Sequence[Any]
) -> NoReturn:
    """Raise a driver's error as SQLAlchemy raises it for its own statements on conn (dbapi_connection: the DBAPI
    connection under it, as its pool holds it).

    As SQLAlchemy does: the driver's exception becomes its dialect's DBAPI exception (asyncpg's through the classes
    of SQLAlchemy's asyncpg dialect, sqlstate kept; sqlite3's are DBAPI exceptions already), and that one is
    wrapped in SQLAlchemy's exception of the same PEP 249 name (IntegrityError, OperationalError... DBAPIError),
    with it as .orig. One the dialect judges a lost connection invalidates conn (connection_invalidated), which
    also has the pool check the connections it holds before handing them out again (core.store.db). An error that
    is no database error (a TypeError, say) goes through as it is, as SQLAlchemy lets it.
    """
    dialect = conn.dialect
    orig: Any = _as_dbapi_error(dialect, error)
    if orig is None:
        raise error
    try:
        lost = dbapi_connection is not None and bool(dialect.is_disconnect(orig, dbapi_connection, None))
    except Exception:
        lost = False
    if lost and not conn.invalidated:
        await conn.invalidate(orig)
    raise _sqlalchemy_error(dialect, orig, sql, tuple(args), lost) from orig


# asyncpg's exceptions as SQLAlchemy's asyncpg dialect translates them (that of SQLAlchemy 2.1, which pyproject
# holds to; 2.0's table was another), by the name of the class of its DBAPI module that each becomes: the first class
# of an error's MRO listed here. An asyncpg error with none listed in its MRO is raised as it is.
# tests/test_pg_direct.py compares the two paths' exceptions.
_ASYNCPG_AS_DBAPI = (
    ("IntegrityConstraintViolationError", "IntegrityError"),
    ("PostgresError", "Error"),
    ("SyntaxOrAccessError", "ProgrammingError"),
    ("InterfaceError", "InterfaceError"),
    ("InvalidCachedStatementError", "InvalidCachedStatementError"),
    ("InternalServerError", "InternalServerError"),
    ("RestrictViolationError", "RestrictViolationError"),
    ("NotNullViolationError", "NotNullViolationError"),
    ("ForeignKeyViolationError", "ForeignKeyViolationError"),
    ("UniqueViolationError", "UniqueViolationError"),
    ("CheckViolationError", "CheckViolationError"),
    ("ExclusionViolationError", "ExclusionViolationError"),
    ("InternalClientError", "InternalClientError"),
)


@functools.cache
def _asyncpg_translation() -> dict[type, str]:
    import asyncpg

    return {getattr(asyncpg.exceptions, theirs): ours for theirs, ours in _ASYNCPG_AS_DBAPI}


def _as_dbapi_error(dialect: Dialect, error: Exception) -> Exception | None:
    """The DBAPI exception SQLAlchemy's dialect makes of a driver's error, or None if it makes none."""
    dbapi = dialect.loaded_dbapi
    if isinstance(error, dbapi.Error):
        return error  # sqlite3's: the DBAPI's own
    if dialect.driver != "asyncpg":
        return None
    translation = _asyncpg_translation()
    name = next((translation[class_] for class_ in type(error).__mro__ if class_ in translation), None)
    if name is None:
        return None
    # One of SQLAlchemy's emulated DBAPI exceptions (sqlalchemy.exc.EmulatedDBAPIException), made as it makes them:
    # the driver's message, and the driver's exception kept (driver_exception; its sqlstate as .sqlstate, .pgcode).
    made: Exception = getattr(dbapi, name)(error.args[0] if error.args else str(error), error)
    made.__cause__ = error
    return made


def _sqlalchemy_error(
    dialect: Dialect, orig: Exception, sql: str, params: tuple[Any, ...], lost: bool
) -> sa_exc.DBAPIError:
    # SQLAlchemy's exception class of the first PEP 249 name in the DBAPI exception's MRO (by the dialect's names).
    names = dialect.dbapi_exception_translation_map
    for class_ in type(orig).__mro__:
        found = getattr(sa_exc, names.get(class_.__name__, class_.__name__), None)
        if isinstance(found, type) and issubclass(found, sa_exc.DBAPIError):
            return found(sql, params, orig, connection_invalidated=lost)
    return sa_exc.DBAPIError(sql, params, orig, connection_invalidated=lost)


class Direct(Protocol):
    """A connection that sends compiled statements itself: DirectConnection, or SQLite's SqliteDirect."""

    @property
    def conn(self) -> AsyncConnection: ...

    @property
    def dialect(self) -> Dialect: ...

    async def fetch(self, sql: str, *args: Any) -> Sequence[Any]: ...

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None: ...


async def to_completion(ending: Coroutine[Any, Any, None]) -> None:
    """Run ending to its end even if the calling task is cancelled meanwhile (then re-raised)."""
    # Runs ending in a task of its own and waits for it even if this task is cancelled meanwhile (then re-raised):
    # a connection must not be used again, or pooled, with the transaction still open.
    task = asyncio.ensure_future(ending)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            cancelled = error
    task.result()
    if cancelled is not None:
        raise cancelled


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    row: Callable[[Sequence[Any]], Any]


def json_values(name: str) -> Any:
    """SQLite: the values of a JSON array parameter, as a subquery for IN (the same SQL whatever their number)."""
    return (
        select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=String()))).scalar_subquery()
    )


class Statement:
    """A Core statement compiled once per dialect and sent by the driver itself (a Direct: asyncpg's connection here,
    or SQLite's in sqlite_driver.SqliteDirect), for the hot paths.

    The SQL is what SQLAlchemy would send (its casts included), the parameters go through the same bind processors
    (JSON serialised, datetimes in UTC), and each row comes back as a named tuple of the statement's columns
    (attributes, _asdict), valued as SQLAlchemy's results would be: its asyncpg dialect decodes JSON in the
    connection's codecs, and the columns' result processors run here. Statements with IN lists are not for this.
    """

    def __init__(self, statement: Executable, *, keys: Sequence[str] | None = None) -> None:
        # keys: the parameters an INSERT or UPDATE is executed with (its columns), as SQLAlchemy compiles it.
        self._statement = statement
        self._keys = list(keys) if keys is not None else None
        # By dialect: a process may hold databases of both kinds (the tests do).
        self._compiled: dict[str, _Compiled] = {}
        self._fixed: dict[str, Any] = {}

    async def fetch(self, direct: Direct, params: Mapping[str, Any]) -> list[Any]:
        """Run it with params in direct's transaction; its rows."""
        dialect = direct.dialect
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        args = self._args(compiled, params)
        return [compiled.row(record) for record in await direct.fetch(compiled.sql, *args)]

    async def executemany(self, direct: Direct, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per parameter set, in one round trip; no rows."""
        dialect = direct.dialect
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        await direct.executemany(compiled.sql, [self._args(compiled, row) for row in rows])

    def _args(self, compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
        fixed = self._fixed
        args = [params[name] if name in params else fixed[name] for name, _ in compiled.binds]
        for index, (_, bind) in enumerate(compiled.binds):
            if bind is not None:
                args[index] = bind(args[index])
        return args

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled: Any = self._statement.compile(dialect=dialect, column_keys=self._keys)  # type: ignore[attr-defined]
        if "POSTCOMPILE" in compiled.string:
            raise ValueError(
                "pg_direct.Statement cannot send an IN list, whose SQL depends on the list's length: use"
                " = any_(array) on PostgreSQL, or in_(json_values(name)) with the list as JSON on SQLite"
            )
        # The parameters in the order the SQL takes them, each with its type's bind processor for this dialect.
        parameters = compiled.binds
        names = list(compiled.positiontup or ())
        if any(name not in parameters for name in names):
            raise ValueError(f"pg_direct.Statement needs parameter names that SQL takes as they are: {names}")
        binds = tuple((name, _bind_processor(parameters[name], dialect)) for name in names)
        # The values the statement carries itself (a literal compared with a column), by their parameter names.
        self._fixed = {name: value for name, value in compiled.params.items() if not parameters[name].required}
        # Each row as the statement's columns, in their order: a SELECT's, or the RETURNING columns SQLAlchemy
        # rendered for an INSERT, UPDATE or DELETE (those it asked for, or its implicit RETURNING of a primary key).
        columns = (
            list(compiled.effective_returning or ())
            if compiled.isinsert or compiled.isupdate or compiled.isdelete
            else list(getattr(self._statement, "selected_columns", ()))
        )
        shape = namedtuple("DirectRow", [column.key for column in columns], rename=True)  # type: ignore[misc]
        results = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        if any(results):
            converters = list(zip(range(len(results)), results, strict=True))

            def row(record: Sequence[Any]) -> Any:
                values = list(record)
                for index, convert in converters:
                    if convert is not None:
                        values[index] = convert(values[index])
                return shape._make(values)

        else:

            def row(record: Sequence[Any]) -> Any:
                return shape._make(record)

        made = self._compiled[dialect.name] = _Compiled(sql=compiled.string, binds=binds, row=row)
        return made


def _bind_processor(parameter: BindParameter[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    return parameter.type.dialect_impl(dialect).bind_processor(dialect)


class Keeper:
    """Idle DirectConnections kept checked out of SQLAlchemy's pool, to be handed out again without a checkout
    (which costs about as much as a click's read). One idle longer than ping_after is pinged before use, as the
    pool would (core.store.db), and one that is lost is discarded. At most `size` are kept, newest first; those
    whose commit began the next transaction go only to the next write, and tidy() ends the ones no write took.
    """

    def __init__(self, engine: AsyncEngine, *, size: int, ping_after: float) -> None:
        self._engine = engine
        self._size = size
        self._ping_after = ping_after
        self._idle: list[tuple[DirectConnection, float]] = []
        self._begun: list[tuple[DirectConnection, float]] = []

    async def take(self, *, write: bool = False) -> DirectConnection:
        """A connection: a kept one if there is one that answers (for a write, first one with its transaction
        begun already), else one checked out of the pool."""
        for kept in (self._begun, self._idle) if write else (self._idle,):
            while kept:
                direct, since = kept.pop()
                if direct.usable and time.monotonic() - since >= self._ping_after:
                    try:
                        await direct.execute("SELECT 1")
                    except Exception:
                        pass  # invalidated by the failure: not usable, discarded below
                if direct.usable:
                    return direct
                await direct.close()
        return await DirectConnection.connect(self._engine)

    async def give(self, direct: DirectConnection) -> None:
        """Keep a connection that is done with, or return it to the pool."""
        if direct.usable and len(self._idle) + len(self._begun) < self._size:
            if not direct.in_transaction:
                self._idle.append((direct, time.monotonic()))
                return
            if direct.begun_ahead:
                self._begun.append((direct, time.monotonic()))
                return
        await direct.close()

    async def tidy(self) -> None:
        """Roll back the transactions begun ahead that no write took within ping_after; keep their connections."""
        now = time.monotonic()
        stale = [direct for direct, since in self._begun if now - since >= self._ping_after]
        self._begun = [(direct, since) for direct, since in self._begun if now - since < self._ping_after]
        for direct in stale:
            await direct.close_transaction()
            await self.give(direct)

    async def close(self) -> None:
        """Return every kept connection to the pool."""
        kept, self._idle, self._begun = [*self._idle, *self._begun], [], []
        for direct, _ in kept:
            await direct.close()
