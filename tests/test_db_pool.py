"""The pool: on PostgreSQL idle connections are pinged and dead ones replaced, and a burst's connections are kept;
reads hold no transaction open on either backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

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
    async with database.read() as session:
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


async def test_the_pool_keeps_the_connections_a_burst_opened(db: Database) -> None:
    # Connections opened for a burst and closed after it would be opened again at the next one, each a new server
    # process and every statement prepared anew, just when the process is busiest.
    opened: list[int] = []
    event.listen(db.engine.sync_engine.pool, "connect", lambda *_: opened.append(1))
    together = asyncio.Barrier(4)  # 2 x pool_size: as many transactions at once as the pool allows

    async def transaction() -> None:
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
            await together.wait()

    for _ in range(3):
        await asyncio.wait_for(asyncio.gather(*(transaction() for _ in range(4))), 10)
    assert len(opened) == 4
    # All four still open: in the pool, or kept by the database for the statements asyncpg sends (at most half).
    pool = db.engine.sync_engine.pool
    assert pool.checkedin() + pool.checkedout() == 4 and pool.checkedout() <= 1  # type: ignore[attr-defined]


async def test_a_read_holds_no_transaction_open(migrated_db: Database) -> None:
    # A read's statements each see what was committed when they ran (on PostgreSQL as they did inside READ
    # COMMITTED): without a BEGIN, and without the ROLLBACK that ended it, one round trip each instead of three.
    async def in_transaction(session: AsyncSession) -> bool:
        raw = await (await session.connection()).get_raw_connection()
        driver = raw.driver_connection
        return bool(driver.is_in_transaction() if migrated_db.is_postgres else driver.in_transaction)  # type: ignore[union-attr]

    async with migrated_db.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM approvals"))).scalar_one() == 0
        assert not await in_transaction(session)
    async with migrated_db.transaction() as writing:
        await writing.execute(text("SELECT count(*) FROM approvals"))
        assert await in_transaction(writing)
