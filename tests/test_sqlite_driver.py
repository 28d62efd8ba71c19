"""SQLite through SQLAlchemy's aiosqlite dialect, the hot statements at once on the loop's thread: same results,
no trips, locks waited for without stalling the loop, kept connections."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, exc, text

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


async def test_statements_give_sqlalchemys_results_through_its_public_aiosqlite_dialect(db: Database) -> None:
    # SQLAlchemy's own dialect for aiosqlite: no dialect or cursor of ours for SQLAlchemy to call into.
    assert db.engine.dialect.driver == "aiosqlite" and type(db.engine.dialect).__module__.startswith("sqlalchemy.")
    async with db.engine.begin() as conn:
        inserted = await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        await conn.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"), [{"name": "b", "n": 2}, {"name": "c", "n": 3}]
        )
        updated = await conn.execute(text("UPDATE t SET n = n + 10 WHERE n >= 2 RETURNING name, n"))
        assert sorted(updated.all()) == [("b", 12), ("c", 13)]
        rows = await conn.execute(text("SELECT name, n FROM t ORDER BY id"))
        assert rows.keys() == ["name", "n"] and rows.all() == [("a", 1), ("b", 12), ("c", 13)]
    with pytest.raises(exc.IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 9)"))
    async with db.engine.connect() as conn:
        streamed = await conn.stream(text("SELECT name FROM t ORDER BY id"))
        assert [row.name async for row in streamed] == ["a", "b", "c"]
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES ('z', 1)"))
        direct = await direct_of(session)
        assert [tuple(row) for row in await direct.fetch("SELECT n FROM t WHERE name = ?", "z")] == [(1,)]
    async with db.read() as session:
        assert (await session.execute(text("SELECT n FROM t WHERE name = 'z'"))).scalar_one() == 1
    async with db.read() as session:
        direct = await direct_of(session)
        assert [tuple(row) for row in await direct.fetch("SELECT n FROM t WHERE name = ?", "z")] == [(1,)]
    # The audit log's hash function is on every connection.
    async with db.read() as session:
        (digest,) = await (await direct_of(session)).fetch(f"SELECT {sqlite_driver.SQLITE_SHA256}('abc')")
    assert digest[0] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_direct_statements_of_a_write_transaction_do_not_yield_to_the_event_loop(db: Database) -> None:
    async with db.transaction() as session, Ticker() as ticker:
        direct = await direct_of(session)
        before = ticker.ticks
        for n in range(10):
            await direct.fetch("INSERT INTO t (name, n) VALUES (?, ?)", f"x{n}", n)
        await direct.fetch("UPDATE t SET n = n + 1")
        assert [tuple(row) for row in await direct.fetch("SELECT sum(n) FROM t")] == [(sum(range(1, 11)),)]
        # Other tasks got no turn while the write lock was held: the hot statements cost their SQL, no trips.
        assert ticker.ticks == before


async def test_a_lock_held_by_another_process_is_waited_for_without_stalling_the_event_loop(
    db: Database, path: Path
) -> None:
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
        # The writer's BEGIN IMMEDIATE waits in asyncio sleeps, not in SQLite's busy handler: the loop kept turning.
        assert ticker.ticks > 50
        other.execute("COMMIT")
        await asyncio.wait_for(writer, 5)
    other.close()
    async with db.read() as session:
        names = (await session.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
    assert names == ["other", "mine"]


async def test_a_lock_held_past_the_busy_timeout_fails_the_statement(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT", 0.2)
    db = Database(f"sqlite+aiosqlite:///{path}")
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, n INTEGER)"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(exc.OperationalError, match="database is locked"):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO t (name, n) VALUES ('mine', 2)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    try:
        # The connection that gave up is usable again.
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES ('later', 3)"))
    finally:
        await db.close()


async def test_a_cancelled_write_transaction_rolls_back_and_leaves_the_lock_free(db: Database) -> None:
    entered = asyncio.Event()

    async def write() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES ('cut', 1)"))
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(write())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES ('next', 2)"))
    async with db.read() as session:
        assert (await session.execute(text("SELECT name FROM t"))).scalars().all() == ["next"]


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
    async with db.read() as session:
        assert [tuple(row) for row in await (await direct_of(session)).fetch("SELECT count(*) FROM t")] == [(1,)]


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
    async with db.read() as session:
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
    async with db.read() as session:
        names = list((await session.execute(text("SELECT name FROM t ORDER BY id"))).scalars())
    assert names == ["row0", "row1", "row2", "after"]
    # Nothing is left open on the kept connection between transactions: another process can take the write lock.
    other = sqlite3.connect(db.url.split(":///", 1)[1], timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_reads_share_one_kept_connection_and_see_every_commit(db: Database) -> None:
    checkouts: list[int] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
    seen: list[list[Any]] = []
    for n in range(3):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (name, n) VALUES (:name, :n)"), {"name": f"row{n}", "n": n})
        async with db.read() as session:
            direct = await direct_of(session)
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
