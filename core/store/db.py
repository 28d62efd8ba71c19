"""The database handle: async engine, sessions, and the few dialect differences we rely on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.dml import Insert

from core.store import pg_direct, sqlite_driver


def new_id(prefix: str) -> str:
    """A time-ordered unique id: prefix, 12 hex digits of milliseconds, 16 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy, not the driver, emit BEGIN: needed for SAVEPOINT and for BEGIN IMMEDIATE below.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer. A writer that meets another's lock waits in the driver
    # (sqlite_driver: busy_timeout stays 0 there, so SQLite never sleeps on the event loop's thread).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Checkpoints belong to Database.checkpoint, off the event loop's thread; this only backs it up.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
    cursor.close()


# A commit that finds the WAL past SQLite's automatic threshold (1000 pages) copies it into the database file and
# fsyncs it, milliseconds spent inside that commit; with statements on the event loop's thread (sqlite_driver)
# every request waiting on the loop would pay for them. Database.checkpoint does the copy from a worker thread
# every CHECKPOINT_SECONDS instead (the runtime schedules it), and a commit checkpoints only if the WAL reaches
# WAL_BACKSTOP_PAGES (about 40 MiB), should those checkpoints stop keeping up.
CHECKPOINT_SECONDS = 1.0
WAL_BACKSTOP_PAGES = 10000


WRITE = "ackbot_write"
# A session keeps the driver connection for its statements sent without SQLAlchemy here (see direct_of).
DIRECT = "ackbot_direct"
# SQLite's kept write connection: its transactions are begun and ended by Database, not by SQLAlchemy.
_BEGUN_OUTSIDE = "ackbot_begun_outside"
_KEEPER = "ackbot_keeper"  # ...and a read session, where to take one from and give it back (pg_direct.Keeper)
# Read sessions' connections: no transaction on the server, each statement sees what was committed when it ran
# (what PostgreSQL's READ COMMITTED gave each statement of a read transaction anyway). It saves a read its BEGIN
# and ROLLBACK: on PostgreSQL two round trips, on SQLite a statement.
READ = "ackbot_read"

# A pooled PostgreSQL connection idle longer than this is pinged before use (see _ping_when_idle).
IDLE_PING_SECONDS = 1.0
_RETURNED_AT = "ackbot_returned_at"
_VOUCHED_AT = "ackbot_vouched_at"  # when the connection was opened, or last answered a ping


def _ping_when_idle(dialect: Dialect) -> dict[str, Any]:
    """Pool listeners, by event name, that ping a connection only when it sat idle in the pool, or when another was
    found lost since it last answered.

    A server restart leaves pooled connections dead, and SQLAlchemy's pool_pre_ping finds them by pinging every
    connection at every checkout: one more round trip per transaction, the cost of a small statement. A
    connection that was in use within the last IDLE_PING_SECONDS is trusted instead. One that fails anyway is
    invalidated (by SQLAlchemy's disconnect handling, or by pg_direct's for the statements asyncpg sends), and
    from then on every connection of the pool that has not answered since is pinged at its next checkout (a dead
    one is replaced there), so only the requests in flight at the moment of the restart see the error (a 503,
    which senders retry), and every later one gets a live connection.
    """
    # When a connection of this pool was last found lost (time.monotonic()).
    lost_at = [0.0]

    def connect(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = record.info[_VOUCHED_AT] = time.monotonic()

    def checkin(_dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def invalidate(dbapi_connection: DBAPIConnection | None, _record: ConnectionPoolEntry, error: Any) -> None:
        # Invalidated because it was lost (not, say, cut off mid-statement by a cancellation): the others may be too.
        if dbapi_connection is None or not isinstance(error, Exception):
            return
        try:
            lost = isinstance(error, exc.DisconnectionError) or dialect.is_disconnect(
                error,  # type: ignore[arg-type]
                dbapi_connection,
                None,
            )
        except Exception:
            lost = True
        if lost:
            lost_at[0] = time.monotonic()

    def checkout(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        now = time.monotonic()
        returned_at = record.info.get(_RETURNED_AT)
        if (
            returned_at is not None
            and now - returned_at < IDLE_PING_SECONDS
            and record.info.get(_VOUCHED_AT, 0.0) > lost_at[0]
        ):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:
            if not dialect.is_disconnect(error, dbapi_connection, None):  # type: ignore[arg-type]
                raise
            alive = False
        if not alive:
            # The pool discards this connection and checks out a new one.
            raise exc.DisconnectionError("a pooled connection did not answer its ping")
        record.info[_VOUCHED_AT] = now

    return {"connect": connect, "checkin": checkin, "invalidate": invalidate, "checkout": checkout}


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front: a deferred one that reads, then writes, fails with
    # SQLITE_BUSY when another writer committed in between, where waiting for the lock is what we want.
    # Reads stay deferred, so in WAL mode they never queue behind a writer.
    options = conn.get_execution_options()
    if not options.get(READ) and not options.get(_BEGUN_OUTSIDE):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE) else "BEGIN")


@dataclass(frozen=True)
class WriteTransaction:
    """A Writer's transaction: its connection, and on PostgreSQL the driver's (for statements sent by asyncpg)."""

    conn: AsyncConnection
    direct: pg_direct.DirectConnection | None


class Writer:
    """Write transactions one after another, for Core statements, on a connection kept between them.

    Without the ORM's session: its unit of work, identity map and state tracking cost about a sixth of intake's CPU
    on PostgreSQL (Database.joined_session gives one on the same connection to code that needs the ORM). The
    connection stays checked out from one transaction to the next, as long as the writer is used: a checkout and
    checkin of SQLAlchemy's pool cost about 60 µs and several trips into its greenlet, once per intake group.
    """

    def __init__(self, db: Database, *, again: bool = False) -> None:
        self._db = db
        # A writer that expects to write again soon (intake's) has each commit begin the next transaction in the
        # same round trip (PostgreSQL, see pg_direct.DirectConnection.transaction).
        self._again = again
        self._direct: pg_direct.DirectConnection | None = None  # PostgreSQL
        self._conn: AsyncConnection | None = None  # SQLite

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteTransaction]:
        """One write transaction: committed on success, rolled back on error."""
        if self._db.direct_engine is not None:
            direct = await self._direct_connection(self._db.direct_engine)
            async with direct.transaction(begin_next=self._again):
                yield WriteTransaction(direct.conn, direct)
            return
        async with self._db._write_turn():
            conn = await self._sqlite_connection()
            try:
                # The transaction begins with the first statement (SQLAlchemy's autobegin).
                yield WriteTransaction(conn, None)
                await conn.commit()
            except BaseException:
                # SQLite's statements run at once on the loop's thread (sqlite_driver): a rollback waits on nothing
                # that a cancellation could cut short.
                await conn.rollback()
                raise

    async def close(self) -> None:
        """Return the connection to the pool."""
        direct, conn, self._direct, self._conn = self._direct, self._conn, None, None
        if direct is not None:
            await direct.close()
        if conn is not None:
            await conn.close()

    async def _direct_connection(self, engine: AsyncEngine) -> pg_direct.DirectConnection:
        if self._direct is not None and not self._direct.usable:
            # Lost (a server restart, say) and invalidated by the failure that found out: another one, from a pool
            # that discarded the others of its time too.
            stale, self._direct = self._direct, None
            await stale.close()
        if self._direct is None:
            self._direct = await pg_direct.DirectConnection.connect(engine)
        return self._direct

    async def _sqlite_connection(self) -> AsyncConnection:
        if self._conn is not None and (self._conn.invalidated or self._conn.closed):
            stale, self._conn = self._conn, None
            await stale.close()
        if self._conn is None:
            # Its connections are writers from the start (see _sqlite_begin).
            self._conn = await self._db.engine.execution_options(**{WRITE: True}).connect()
        return self._conn


async def direct_of(session: AsyncSession | pg_direct.Direct) -> pg_direct.Direct:
    """The driver connection for a session's statements sent without SQLAlchemy (pg_direct.Statement).

    PostgreSQL: a write transaction's session has its own; a read session takes one the first time it is asked
    (so a read that sends nothing still connects to nothing), and gives it back when the session ends. SQLite:
    the session's own connection, inside whatever transaction it has begun. A driver connection (from
    Database.direct_reads) is its own.
    """
    if not isinstance(session, AsyncSession):
        return session
    direct: pg_direct.Direct | None = session.info.get(DIRECT)
    if direct is None:
        keeper: pg_direct.Keeper | None = session.info.get(_KEEPER)  # a PostgreSQL read session's
        if keeper is not None:
            direct = session.info[DIRECT] = await keeper.take()
        elif session.bind is not None and session.bind.dialect.name == "sqlite":
            direct = session.info[DIRECT] = await sqlite_driver.InlineDirect.of(await session.connection())
        else:
            raise RuntimeError("a PostgreSQL session made outside Database has no connection for direct statements")
    return direct


def is_read(session: AsyncSession) -> bool:
    """Whether the session is a read (see READ): no transaction on the server, each statement on its own."""
    bind = session.bind
    return isinstance(bind, AsyncEngine) and bool(bind.get_execution_options().get(READ))


def _ends_locally(session: AsyncSession) -> bool:
    # SQLite runs on the loop's thread; an autocommit session (reads, Database.single_statements, and on PostgreSQL
    # a write transaction's, whose COMMIT pg_direct sends) has no server transaction of its own to end.
    bind = session.bind
    if bind is None:
        return False
    if bind.dialect.name == "sqlite":
        return True
    options = (
        bind.get_execution_options() if isinstance(bind, AsyncEngine) else bind.sync_engine.get_execution_options()
    )
    return options.get("isolation_level") == "AUTOCOMMIT"


async def _flush_pending(session: AsyncSession) -> None:
    # Most transactions send everything as statements (many by the driver): a flush with nothing to write would
    # still cost a greenlet switch there and back and SQLAlchemy's flush bookkeeping.
    if session.new or session.dirty or session.deleted:
        await session.flush()


class Session(AsyncSession):
    """An AsyncSession whose `async with` ends in the calling task when ending cannot wait on the database.

    AsyncSession's own exit hands close() to a task of its own, so that a cancellation cannot cut it short while
    it waits on the database; that costs every transaction and every read a turn of the event loop, and in a
    busy process a turn is milliseconds. Closing waits on nothing after a commit or rollback, or on SQLite at all
    (its statements run on the loop's thread, see sqlite_driver), so only a PostgreSQL session still inside a
    transaction (a read: closing rolls it back over the network) keeps the protected path.
    """

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        if self.in_transaction() and self.bind is not None and not _ends_locally(self):
            await super().__aexit__(type_, value, traceback)
        else:
            await self.close()

    async def close(self) -> None:
        sync = self.sync_session
        # A session that began nothing and holds nothing (a read whose statements went direct, or none at all) has
        # nothing to close: AsyncSession.close() would still cost a greenlet switch there and back.
        if sync.in_transaction() or sync.identity_map or sync.new or sync.deleted:
            await super().close()
        keeper: pg_direct.Keeper | None = self.info.get(_KEEPER)
        if keeper is not None and DIRECT in self.info:
            await keeper.give(self.info.pop(DIRECT))


class Database:
    """One per process: owns the engine and hands out sessions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("postgresql"):
            # The pool keeps every connection it opens. With overflow, the connections past pool_size were closed
            # as they came back and opened again at the next burst: about 3 ms of this process's CPU and 10 ms of
            # waiting each (a server process is forked, and every statement prepared anew), paid exactly when the
            # process is busiest (46 a 10 s burst of 100 clicks/s).
            kwargs.update(pool_size=2 * pool_size, max_overflow=0)
        # A SQLite file has no server to lose: nothing is pinged there. A sqlite+aiosqlite:// URL runs on
        # sqlite_driver's dialect: statements on the event loop's thread, not as trips to aiosqlite's.
        self.engine: AsyncEngine = create_async_engine(sqlite_driver.engine_url(url), **kwargs)
        if self.engine.dialect.name == "postgresql":
            # A server restart leaves pooled connections dead: one idle for a while is checked as it is taken out.
            for name, listener in _ping_when_idle(self.engine.dialect).items():
                event.listen(self.engine.sync_engine.pool, name, listener)
        self._sqlite_file: str | None = None
        self._checkpointer: sqlite3.Connection | None = None
        # A checkpoint cancelled at shutdown goes on in its thread: closing waits for it rather than close under it.
        self._checkpoint_lock = threading.Lock()
        if self.engine.dialect.name == "sqlite":
            self._sqlite_file = self._ensure_sqlite_dir(url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "connect", sqlite_driver.prepare_connection)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        # PostgreSQL: a Writer's connections leave BEGIN and COMMIT to pg_direct; reads use no transaction at all.
        self.direct_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.is_postgres else None
        # PostgreSQL: connections for statements sent by asyncpg, kept between the transactions and reads that use
        # them (a few: the pool has 2 x pool_size in all).
        self._keeper = (
            pg_direct.Keeper(self.direct_engine, size=max(1, pool_size // 2), ping_after=IDLE_PING_SECONDS)
            if self.direct_engine is not None
            else None
        )
        # Reads (see READ); transaction() has sessions of its own.
        reads = (self.direct_engine or self.engine).execution_options(**{READ: True})
        self.sessions = async_sessionmaker(
            reads, class_=Session, expire_on_commit=False, info={_KEEPER: self._keeper} if self._keeper else None
        )
        self._transactions = async_sessionmaker(self.engine, class_=Session, expire_on_commit=False)
        # One-statement writes (single_statements): on PostgreSQL each commits on its own, however it is sent.
        self._autocommits = (
            async_sessionmaker(self.direct_engine, class_=Session, expire_on_commit=False, info={_KEEPER: self._keeper})
            if self.direct_engine is not None
            else None
        )
        self._write_lock = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None
        # SQLite's kept connections: the write transactions' (transaction()) and the reads' (direct_reads()).
        self._sqlite_kept: dict[str, sqlite_driver.InlineDirect] = {}

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> str | None:
        """Make the database file's directory; returns the file's path (None in memory)."""
        path = url.split(":///", 1)[-1].split("?", 1)[0]
        if not path or path == ":memory:":
            return None
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        return path

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def insert(self, table: Any) -> Insert:
        """An INSERT that understands ON CONFLICT on this backend."""
        if self.is_postgres:
            return postgresql.insert(table)
        return sqlite.insert(table)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one write transaction: committed on success, rolled back on error."""
        if self.direct_engine is not None:
            async with self._direct_transaction() as session:
                yield session
            return
        async with self._write_turn():
            # SQLite has one writer at a time (the turn above), so one connection serves every write transaction,
            # kept from one to the next: no session of its own, no pool checkout, BEGIN IMMEDIATE and COMMIT sent
            # by the driver. The session is joined to it, and its statements run at once on the loop's thread.
            direct = await self._sqlite_writer()
            await direct.execute("BEGIN IMMEDIATE")
            session = self.joined_session(direct.conn)
            session.info[DIRECT] = direct
            try:
                yield session
                await _flush_pending(session)
                await direct.execute("COMMIT")
            except BaseException:
                # Runs at once on the loop's thread (sqlite_driver): nothing a cancellation could cut short.
                if direct.in_transaction:
                    await direct.execute("ROLLBACK")
                raise
            finally:
                await session.close()

    @asynccontextmanager
    async def _direct_transaction(self) -> AsyncIterator[AsyncSession]:
        # PostgreSQL: BEGIN, COMMIT and ROLLBACK sent by asyncpg (see pg_direct), the session joined to the
        # transaction on the same connection; its statements go through SQLAlchemy, or through asyncpg where a
        # store function finds the connection in the session (direct_of).
        async with self._kept() as direct, direct.transaction():
            session = self.joined_session(direct.conn, direct)
            try:
                yield session
                await _flush_pending(session)
            finally:
                await session.close()

    @asynccontextmanager
    async def single_statements(self) -> AsyncIterator[AsyncSession]:
        """A session for writes that are one statement each: on PostgreSQL every statement commits on its own.

        A statement is atomic by itself, so a write that is one statement needs no BEGIN and COMMIT around it:
        on PostgreSQL that is one round trip instead of three (and each waits for a turn of a busy loop). On
        SQLite, where statements cost no round trip, it is one write transaction, as transaction() gives.
        Statements only: nothing is flushed, so ORM objects added to it are not written.
        """
        if self._autocommits is None:
            async with self.transaction() as session:
                yield session
            return
        async with self._autocommits() as session:
            yield session
            if session.new:
                raise RuntimeError("single_statements() writes statements only: ORM objects added to it are lost")

    @asynccontextmanager
    async def direct_reads(self) -> AsyncIterator[pg_direct.Direct]:
        """A driver connection for reads sent without SQLAlchemy (pg_direct.Statement), each on its own.

        PostgreSQL: a kept connection, with no session around it. SQLite: one kept connection that every read
        shares, as each statement runs to its end on the loop's thread (see sqlite_driver) and a SELECT outside a
        transaction reads the last commit.
        """
        if self._keeper is not None:
            async with self._kept() as direct:
                yield direct
            return
        yield await self._sqlite_connection(READ, {READ: True})

    async def fetch_statement(self, statement: pg_direct.Statement, params: dict[str, Any]) -> list[Any]:
        """PostgreSQL: one Core statement sent by asyncpg itself (pg_direct.Statement), committed on its own."""
        async with self._kept() as direct:
            return await statement.fetch(direct, params)

    async def fetch_direct(self, sql: str, *args: Any) -> Sequence[Any]:
        """PostgreSQL: one statement ($1, $2... parameters) sent by asyncpg itself, committed on its own; its rows."""
        async with self._kept() as direct:
            return await direct.fetch(sql, *args)

    @asynccontextmanager
    async def _kept(self) -> AsyncIterator[pg_direct.DirectConnection]:
        # PostgreSQL: a kept connection for the block, given back after it (see pg_direct.Keeper).
        if self._keeper is None:
            raise RuntimeError("statements sent by asyncpg are for PostgreSQL")
        direct = await self._keeper.take()
        try:
            yield direct
        finally:
            await self._keeper.give(direct)

    @asynccontextmanager
    async def core_transaction(self) -> AsyncIterator[WriteTransaction]:
        """A connection inside one write transaction, for Core statements: committed on success, rolled back if not."""
        async with self.writer() as writer, writer.transaction() as transaction:
            yield transaction

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[Writer]:
        """A Writer, whose connection goes back to the pool when the block ends."""
        writer = Writer(self)
        try:
            yield writer
        finally:
            await writer.close()

    async def _sqlite_writer(self) -> sqlite_driver.InlineDirect:
        return await self._sqlite_connection(WRITE, {WRITE: True, _BEGUN_OUTSIDE: True})

    async def _sqlite_connection(self, role: str, options: dict[str, Any]) -> sqlite_driver.InlineDirect:
        # One kept connection per role, opened on first use and again after it was lost.
        kept = self._sqlite_kept.get(role)
        if kept is not None and (kept.conn.invalidated or kept.conn.closed):
            del self._sqlite_kept[role]
            await kept.conn.close()
            kept = None
        if kept is None:
            conn = await self.engine.execution_options(**options).connect()
            kept = self._sqlite_kept[role] = await sqlite_driver.InlineDirect.of(conn)
        return kept

    def joined_session(self, conn: AsyncConnection, direct: pg_direct.DirectConnection | None = None) -> AsyncSession:
        """An ORM session inside a Writer's transaction on conn: it flushes into it, its owner ends it.

        direct: on PostgreSQL, the asyncpg connection under conn, for the statements sent by it (see direct_of).
        """
        session = self._transactions(bind=conn, join_transaction_mode="rollback_only")
        if direct is not None:
            session.info[DIRECT] = direct
        return session

    def _write_turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        # SQLite has one writer at a time. Waiting for it in SQLite's busy handler means sleeping in growing
        # steps while the lock sits free; queueing this process's writers on an asyncio lock hands it over
        # at once. (Other processes, such as a CLI command, still meet the driver's retries.)
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file from a worker thread; elsewhere nothing.

        PASSIVE: it copies what no reader still needs and waits for nobody, so writers and readers go on meanwhile.
        """
        if self._sqlite_file is not None:
            await asyncio.to_thread(self._checkpoint_now, self._sqlite_file)

    def _checkpoint_now(self, path: str) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _close_checkpointer(self) -> None:
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None

    async def close(self) -> None:
        if self._keeper is not None:
            await self._keeper.close()
        kept, self._sqlite_kept = list(self._sqlite_kept.values()), {}
        for connection in kept:
            await connection.conn.close()
        await self.engine.dispose()
        if self._sqlite_file is not None:
            await asyncio.to_thread(self._close_checkpointer)
