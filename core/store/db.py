"""The database handle: async engine, sessions, and the few dialect differences we rely on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    # WAL lets readers run beside the one writer. A writer that meets another process's lock waits in aiosqlite's
    # thread (sqlite_driver.BUSY_TIMEOUT).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Checkpoints belong to Database.checkpoint, off the event loop's thread; this only backs it up.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
    cursor.close()


# A commit that finds the WAL past SQLite's automatic threshold (1000 pages) copies it into the database file and
# fsyncs it, milliseconds spent inside that commit while SQLite's one write lock is held, and every writer waiting
# for the lock pays for them. Database.checkpoint does the copy from a worker thread
# every CHECKPOINT_SECONDS instead (the runtime schedules it), and a commit checkpoints only if the WAL reaches
# WAL_BACKSTOP_PAGES (about 40 MiB), should those checkpoints stop keeping up.
CHECKPOINT_SECONDS = 1.0
WAL_BACKSTOP_PAGES = 10000


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
    # The driver begins nothing (isolation_level None), so a transaction SQLAlchemy begins (engine.begin(), Alembic)
    # is begun here. Reads have none; the kept writer's are begun IMMEDIATE by Database (_sqlite_transaction).
    options = conn.get_execution_options()
    if not options.get(READ) and not options.get(_BEGUN_OUTSIDE):
        conn.exec_driver_sql("BEGIN")


async def direct_of(session: AsyncSession | pg_direct.Direct) -> pg_direct.Direct:
    """The driver connection for a session's statements sent without SQLAlchemy (pg_direct.Statement).

    A write transaction's session has its own. A read session (and on PostgreSQL an autocommit one) takes one the
    first time it is asked, so a read that sends nothing connects to nothing, and gives it back when it ends.
    """
    if not isinstance(session, AsyncSession):
        return session
    direct: pg_direct.Direct | None = session.info.get(DIRECT)
    if direct is None:
        keeper: pg_direct.Keeper | _SqliteReads | None = session.info.get(_KEEPER)
        if keeper is None:
            raise RuntimeError("a session made outside Database has no connection for direct statements")
        direct = session.info[DIRECT] = await keeper.take()
    return direct


class _SqliteReads:
    """SQLite's read sessions' driver connection: one kept connection that every read shares (aiosqlite runs its
    statements one after another, each read to its end, and a SELECT outside a transaction reads the last commit)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def take(self) -> pg_direct.Direct:
        return await self._db._sqlite_connection("read", {READ: True})

    async def give(self, _direct: pg_direct.Direct) -> None:
        return


def is_read(session: AsyncSession) -> bool:
    """Whether the session is a read (see READ): no transaction on the server, each statement on its own."""
    bind = session.bind
    return isinstance(bind, AsyncEngine) and bool(bind.get_execution_options().get(READ))


def _ends_locally(session: AsyncSession) -> bool:
    # An autocommit session (PostgreSQL's reads, transaction(autocommit=True), and a write transaction's, whose COMMIT
    # pg_direct sends) has no server transaction of its own to end.
    bind = session.bind
    if bind is None:
        return False
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
    busy process a turn is milliseconds. Closing waits on nothing after a commit or rollback, or in autocommit,
    so only a session still inside a transaction of the database's keeps the protected path.
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
        keeper: pg_direct.Keeper | _SqliteReads | None = self.info.get(_KEEPER)
        if keeper is not None and DIRECT in self.info:
            await keeper.give(self.info.pop(DIRECT))


class Database:
    """One per process: owns the engine; reads with read(), writes with transaction(). Nothing else opens either."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("postgresql"):
            # The pool keeps every connection it opens: with overflow, the ones past pool_size were closed as they
            # came back and opened again at the next burst, exactly when the process is busiest
            # (docs/performance-history.md).
            kwargs.update(pool_size=2 * pool_size, max_overflow=0)
        else:
            kwargs["async_creator"] = sqlite_driver.connection_opener(self._ensure_sqlite_dir(url) or ":memory:")
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._sqlite_file: str | None = None
        self._checkpointer: sqlite3.Connection | None = None
        # A checkpoint cancelled at shutdown goes on in its thread: closing waits for it rather than close under it.
        self._checkpoint_lock = threading.Lock()
        self._write_lock: asyncio.Lock | None = None
        # SQLite's kept connections, by role: the write transactions' and the reads' (see _SqliteReads).
        self._sqlite_kept: dict[str, sqlite_driver.SqliteDirect] = {}
        self._keeper: pg_direct.Keeper | None = None
        keeper: pg_direct.Keeper | _SqliteReads
        if self.is_postgres:
            # A server restart leaves pooled connections dead: one idle for a while is checked as it is taken out.
            for name, listener in _ping_when_idle(self.engine.dialect).items():
                event.listen(self.engine.sync_engine.pool, name, listener)
            # BEGIN and COMMIT are pg_direct's to send; reads use no transaction at all.
            autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            # Connections for statements sent by asyncpg, kept between the transactions and reads that use them.
            keeper = self._keeper = pg_direct.Keeper(
                autocommit, size=max(1, pool_size // 2), ping_after=IDLE_PING_SECONDS
            )
        else:
            self._sqlite_file = self._ensure_sqlite_dir(url)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "connect", sqlite_driver.prepare_connection)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
            self._write_lock = asyncio.Lock()
            autocommit = self.engine
            keeper = _SqliteReads(self)
        self._reads = async_sessionmaker(
            autocommit.execution_options(**{READ: True}), class_=Session, expire_on_commit=False, info={_KEEPER: keeper}
        )
        self._joined = async_sessionmaker(self.engine, class_=Session, expire_on_commit=False)
        # PostgreSQL's autocommit writes (transaction(autocommit=True)): each statement commits on its own.
        self._autocommits = async_sessionmaker(
            autocommit, class_=Session, expire_on_commit=False, info={_KEEPER: keeper}
        )

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

    def insert(self, table: Any) -> Insert:
        """An INSERT that understands ON CONFLICT on this backend."""
        if self.is_postgres:
            return postgresql.insert(table)
        return sqlite.insert(table)

    def read(self) -> AsyncSession:
        """A session for reads (`async with`): no transaction, each statement sees what was committed when it ran;
        direct_of(session) for the statements the driver sends itself."""
        return self._reads()

    @asynccontextmanager
    async def transaction(self, *, autocommit: bool = False, again: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one write transaction: committed on success, rolled back on error.

        autocommit: the writes are one statement each, atomic by themselves. PostgreSQL then sends no BEGIN and
        COMMIT around them (one round trip instead of three); SQLite, whose statements cost no round trip, still
        writes in one transaction. Statements only: ORM objects added to such a session are refused.
        again: the caller writes again at once (intake's writers): on PostgreSQL the commit also begins the next
        write's transaction, in the same round trip.
        """
        if self._keeper is None:
            async with self._sqlite_transaction() as session:
                yield session
        elif autocommit:
            async with self._autocommits() as session:
                yield session
                if session.new:
                    raise RuntimeError("an autocommit transaction writes statements only: ORM objects would be lost")
        else:
            # BEGIN, COMMIT and ROLLBACK sent by asyncpg (see pg_direct), the session joined to the transaction on
            # the same connection; its statements go through SQLAlchemy, or through asyncpg (direct_of).
            direct = await self._keeper.take(write=True)
            try:
                async with direct.transaction(begin_next=again):
                    session = self._joined_session(direct.conn, direct)
                    try:
                        yield session
                        await _flush_pending(session)
                    finally:
                        await session.close()
            finally:
                await self._keeper.give(direct)

    @asynccontextmanager
    async def _sqlite_transaction(self) -> AsyncIterator[AsyncSession]:
        # SQLite has one writer at a time (the turn), so one connection serves every write transaction, kept from
        # one to the next (no pool checkout); BEGIN IMMEDIATE and COMMIT are sent at once (sqlite_driver). IMMEDIATE
        # takes the write lock up front: a deferred transaction that reads, then writes, fails with SQLITE_BUSY when
        # another process's writer committed in between, where waiting for the lock is what we want.
        async with self._write_turn():
            direct = await self._sqlite_connection("write", {_BEGUN_OUTSIDE: True})
            await direct.execute("BEGIN IMMEDIATE")
            session = self._joined_session(direct.conn, direct)
            try:
                yield session
                await _flush_pending(session)
                await direct.execute("COMMIT")
            except BaseException:
                # To its end even if this task is cancelled meanwhile: the connection serves the next writer.
                await pg_direct.to_completion(direct.rollback())
                raise
            finally:
                await session.close()

    def _joined_session(self, conn: AsyncConnection, direct: pg_direct.Direct) -> AsyncSession:
        # An ORM session inside the transaction on conn: it flushes into it, the transaction's owner ends it.
        session = self._joined(bind=conn, join_transaction_mode="rollback_only")
        session.info[DIRECT] = direct
        return session

    async def _sqlite_connection(self, role: str, options: dict[str, Any]) -> sqlite_driver.SqliteDirect:
        # One kept connection per role, opened on first use and again after it was lost.
        kept = self._sqlite_kept.get(role)
        if kept is not None and (kept.conn.invalidated or kept.conn.closed):
            del self._sqlite_kept[role]
            await kept.conn.close()
            kept = None
        if kept is None:
            conn = await self.engine.execution_options(**options).connect()
            kept = self._sqlite_kept[role] = await sqlite_driver.SqliteDirect.of(conn)
        return kept

    def _write_turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        # SQLite has one writer at a time. Waiting for it in SQLite's busy handler means sleeping in growing
        # steps while the lock sits free; queueing this process's writers on an asyncio lock hands it over
        # at once. (Other processes, such as a CLI command, still meet the busy timeout.)
        return self._write_lock if self._write_lock is not None else contextlib.nullcontext()

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def tidy(self) -> None:
        """PostgreSQL: end the transactions that commits began ahead and no write took (see transaction's again)."""
        if self._keeper is not None:
            await self._keeper.tidy()

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
