"""The SQLite adapter that runs each statement in one trip to aiosqlite's thread: same results, fewer trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import exc, text

from core.store.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/driver.db")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, n INTEGER)"))
    yield database
    await database.close()


async def test_each_statement_is_one_trip_with_the_same_results(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    trips: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    async with db.engine.begin() as conn:
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        inserted = await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        assert len(trips) == 1
        await conn.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"), [{"name": "b", "n": 2}, {"name": "c", "n": 3}]
        )
        assert len(trips) == 2
        updated = await conn.execute(text("UPDATE t SET n = n + 10 WHERE n >= 2 RETURNING name, n"))
        assert sorted(updated.all()) == [("b", 12), ("c", 13)] and len(trips) == 3
        rows = await conn.execute(text("SELECT name, n FROM t ORDER BY id"))
        assert rows.keys() == ["name", "n"] and rows.all() == [("a", 1), ("b", 12), ("c", 13)]
        assert len(trips) == 4
        nothing = await conn.execute(text("UPDATE t SET n = 0 WHERE name = 'nobody'"))
        assert nothing.rowcount == 0
        monkeypatch.undo()
    with pytest.raises(exc.IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 9)"))
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3
        streamed = await conn.stream(text("SELECT name FROM t ORDER BY id"))
        assert [row.name async for row in streamed] == ["a", "b", "c"]


async def test_a_committed_transaction_is_not_rolled_back_on_its_way_back_to_the_pool(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (name, n) VALUES ('z', 1)"))
    # BEGIN IMMEDIATE, the INSERT, COMMIT: the pool's reset finds no transaction open and makes no trip.
    assert trips == ["_run", "_run", "commit"]
    trips.clear()
    async with db.sessions() as session:
        await session.execute(text("SELECT n FROM t"))
    assert trips == ["_run", "_run", "rollback"]  # a read's BEGIN is still open when it goes back
