"""PostgreSQL's pool: connections that sat idle are pinged before use, busy ones are not, and dead ones are replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import event, text

from core.store import db as db_module
from core.store.db import Database


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url, pool_size=2)
    yield database
    await database.close()


def count_pings(database: Database) -> list[str]:
    """The statements the pool sends on its own (asyncpg's ping is ';'), recorded as they go out."""
    sent: list[str] = []
    original = database.engine.dialect.do_ping

    def do_ping(dbapi_connection: object) -> bool:
        sent.append("ping")
        return original(dbapi_connection)  # type: ignore[arg-type]

    database.engine.dialect.do_ping = do_ping  # type: ignore[method-assign]
    return sent


async def kill_backends(url: str) -> int:
    """Terminate every server process of this database but ours, as a server restart would."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(url.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres")
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await conn.close()
    return int(killed)


async def select_one(database: Database) -> int:
    async with database.sessions() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


async def test_a_busy_connection_is_not_pinged_and_an_idle_one_is(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = count_pings(db)
    for _ in range(20):
        assert await select_one(db) == 1
    # A fresh connection counts as just used; back-to-back transactions add no round trip.
    assert pings == []
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.05)
    await asyncio.sleep(0.1)
    assert await select_one(db) == 1
    assert pings == ["ping"]


async def test_connections_killed_while_idle_are_replaced_without_an_error(
    db: Database, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.05)
    checkouts: list[int] = []
    event.listen(db.engine.sync_engine.pool, "connect", lambda *_: checkouts.append(1))
    await asyncio.gather(select_one(db), select_one(db))
    assert await kill_backends(pg_url) >= 1
    await asyncio.sleep(0.1)
    # Every request after the restart succeeds: the dead connections fail their ping and new ones are made.
    for _ in range(3):
        async with db.transaction() as session:
            assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
    assert len(checkouts) >= 1
