"""The SQLite dialect that runs each statement on the event loop's thread: same results, no trips, no stalls."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, exc, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from bot.app import build_runtime
from core import runtime as runtime_module
from core.store import sqlite_driver
from core.store.db import Database, direct_of
from tests.conftest import make_config


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "driver.db"


@pytest.fixture
async def db(path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{path}")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, n INTEGER)"))
    yield database
    await database.close()


@pytest.fixture
async def threads(db: Database) -> list[int]:
    """The thread of every call SQLite makes to the SQL function thread_of() (each connection has it)."""
    seen: list[int] = []

    def register(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        def thread_of(value: Any) -> Any:
            seen.append(threading.get_ident())
            return value

        dbapi_connection.create_function("thread_of", 1, thread_of)  # type: ignore[attr-defined]

    event.listen(db.engine.sync_engine, "connect", register)
    await db.engine.dispose()  # the connection that made the table has no such function
    return seen


class Ticker:
    """Counts turns of the event loop while it runs."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.ticks += 1

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_statements_give_the_same_results_on_the_event_loops_thread(db: Database, threads: list[int]) -> None:
    # The configured URL is aiosqlite's, but no aiosqlite thread runs the statements: sqlite3 runs them inline.
    assert db.url.startswith("sqlite+aiosqlite:///") and isinstance(db.engine.dialect, sqlite_driver.InlineDialect)
    async with db.engine.begin() as conn:
        inserted = await conn.execute(text("INSERT INTO t (name, n) VALUES (thread_of('a'), 1)"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        await conn.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"), [{"name": "b", "n": 2}, {"name": "c", "n": 3}]
        )
        updated = await conn.execute(text("UPDATE t SET n = n + 10 WHERE n >= 2 RETURNING name, n"))
        assert sorted(updated.all()) == [("b", 12), ("c", 13)]
        rows = await conn.execute(text("SELECT thread_of(name) AS name, n FROM t ORDER BY id"))
        assert rows.keys() == ["name", "n"] and rows.all() == [("a", 1), ("b", 12), ("c", 13)]
        nothing = await conn.execute(text("UPDATE t SET n = 0 WHERE name = 'nobody'"))
        assert nothing.rowcount == 0
    with pytest.raises(exc.IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 9)"))
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3
        streamed = await conn.stream(text("SELECT thread_of(name) AS name FROM t ORDER BY id"))
        assert [row.name async for row in streamed] == ["a", "b", "c"]
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES (thread_of('z'), 1)"))
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT n FROM t WHERE name = thread_of('z')"))).scalar_one() == 1
    async with db.direct_reads() as direct:
        assert [tuple(row) for row in await direct.fetch("SELECT thread_of(n) FROM t WHERE name = ?", "z")] == [(1,)]
    # Every statement ran on this thread, streamed ones too.
    assert len(threads) >= 10 and set(threads) == {threading.get_ident()}


async def test_a_write_transaction_does_not_yield_to_the_event_loop_between_its_statements(db: Database) -> None:
    async with db.transaction() as session, Ticker() as ticker:
        before = ticker.ticks
        for n in range(10):
            await session.execute(text("INSERT INTO t (name, n) VALUES (:name, :n)"), {"name": f"x{n}", "n": n})
        await session.execute(text("UPDATE t SET n = n + 1"))
        assert (await session.execute(text("SELECT sum(n) FROM t"))).scalar_one() == sum(range(1, 11))
        # Other tasks got no turn while the write lock was held: the transaction's time is the SQL's time.
        assert ticker.ticks == before


async def test_a_lock_held_by_another_process_is_waited_for_on_the_event_loop(db: Database, path: Path) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (name, n) VALUES ('other', 1)")

    async def write() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES ('mine', 2)"))

    async with Ticker() as ticker:
        writer = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        assert not writer.done()
        # SQLite is not sleeping in its busy handler on this thread: the loop kept turning while the writer waited.
        assert ticker.ticks > 50
        other.execute("COMMIT")
        await asyncio.wait_for(writer, 5)
    other.close()
    async with db.sessions() as session:
        names = (await session.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
    assert names == ["other", "mine"]


async def test_a_lock_held_past_the_budget_fails_the_statement(
    db: Database, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_BUDGET", 0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(exc.OperationalError, match="database is locked"):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO t (name, n) VALUES ('mine', 2)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The connection that gave up is usable again.
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES ('later', 3)"))


async def test_a_statement_sent_through_sqlalchemy_waits_for_the_lock_too(db: Database, path: Path) -> None:
    # A transaction SQLAlchemy begins itself (deferred) meets the lock at its first write, not at BEGIN: that
    # statement waits on the event loop, as every statement does.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('mine', 2)"))

    async with Ticker() as ticker:
        writer = asyncio.create_task(write())
        await asyncio.sleep(0.3)
        assert not writer.done() and ticker.ticks > 50
        other.execute("COMMIT")
        await asyncio.wait_for(writer, 5)
    other.close()
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1


async def test_a_direct_statement_fails_as_sqlalchemys_own_would(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
    with pytest.raises(exc.IntegrityError) as theirs:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES ('a', 2)"))
    with pytest.raises(exc.IntegrityError) as ours:
        async with db.transaction() as session:
            direct = await direct_of(session)
            await direct.fetch("INSERT INTO t (name, n) VALUES (?, ?)", "a", 3)
    assert type(ours.value.orig) is type(theirs.value.orig) is sqlite3.IntegrityError
    assert str(ours.value.orig) == str(theirs.value.orig) and not ours.value.connection_invalidated
    # A connection that went away is invalidated, as SQLAlchemy does for its own statements, and replaced.
    async with db.direct_reads() as direct:
        raw = (await direct.conn.get_raw_connection()).driver_connection
        raw.close()
        with pytest.raises(exc.ProgrammingError) as lost:
            await direct.fetch("SELECT 1")
    assert lost.value.connection_invalidated and direct.conn.invalidated
    async with db.direct_reads() as again:
        assert again is not direct and [tuple(row) for row in await again.fetch("SELECT count(*) FROM t")] == [(1,)]


def size(path: Path) -> int:
    return path.stat().st_size


async def test_commits_leave_the_wal_to_the_checkpoint_on_a_worker_thread(db: Database, path: Path) -> None:
    before = size(path)
    for n in range(1200):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES (:name, :n)"), {"name": f"row {n}", "n": n})
    # Each commit adds a few pages to the WAL: past SQLite's own threshold of 1000 pages, yet no commit copied
    # the WAL into the database file.
    wal = path.with_name(path.name + "-wal")
    assert size(wal) > 1000 * 4096
    assert size(path) == before
    await db.checkpoint()
    assert size(path) > before
    async with db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1200


async def test_the_runtime_checkpoints_the_wal_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "CHECKPOINT_SECONDS", 0.05)
    path = tmp_path / "ackbot.db"
    runtime = build_runtime(make_config(f"sqlite+aiosqlite:///{path}"), run_dispatcher=False)
    await runtime.start()
    try:
        async with runtime.db.transaction() as session:
            await session.execute(text("CREATE TABLE big (body TEXT)"))
        before = size(path)
        for _ in range(50):
            async with runtime.db.transaction() as session:
                await session.execute(text("INSERT INTO big (body) VALUES (:body)"), {"body": "y" * 8000})
        for _ in range(250):
            if size(path) >= before + 50 * 8000:
                break
            await asyncio.sleep(0.02)
        assert size(path) >= before + 50 * 8000
    finally:
        await runtime.stop()


async def test_write_transactions_share_one_kept_connection_and_a_failed_one_leaves_nothing(db: Database) -> None:
    checkouts: list[int] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
    for n in range(3):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES (:name, :n)"), {"name": f"row{n}", "n": n})
    # SQLite has one writer at a time: its transactions take turns on one connection, checked out once.
    assert len(checkouts) == 1
    with pytest.raises(exc.IntegrityError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES ('fresh', 9)"))
            await session.execute(text("INSERT INTO t (name, n) VALUES ('row0', 9)"))  # a duplicate name
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES ('after', 10)"))
    async with db.sessions() as session:
        names = list((await session.execute(text("SELECT name FROM t ORDER BY id"))).scalars())
    assert names == ["row0", "row1", "row2", "after"]
    # Nothing is left open on the kept connection between transactions: another process can take the write lock.
    other = sqlite3.connect(db.url.split(":///", 1)[1], timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_direct_reads_share_one_kept_connection_and_see_every_commit(db: Database) -> None:
    checkouts: list[int] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
    seen: list[list[Any]] = []
    for n in range(3):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES (:name, :n)"), {"name": f"row{n}", "n": n})
        async with db.direct_reads() as direct:
            seen.append([tuple(row) for row in await direct.fetch("SELECT name, n FROM t ORDER BY id")])
    # Each read sees the commit before it: the shared connection holds no snapshot between statements.
    assert seen == [[("row0", 0)], [("row0", 0), ("row1", 1)], [("row0", 0), ("row1", 1), ("row2", 2)]]
    # One checkout for the writer, one for the reads, whatever their number.
    assert len(checkouts) == 2
    # Nor does it hold a read lock that would keep the WAL from being checkpointed in full.
    other = sqlite3.connect(db.url.split(":///", 1)[1], timeout=0, isolation_level=None)
    try:
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        other.close()
