"""PostgreSQL writers: transactions and statements sent by asyncpg itself, under SQLAlchemy's connection. Their
errors must be SQLAlchemy's, a lost connection must be replaced, and nothing may be left open on the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from core.ingest import conflicted
from core.store.db import Database, Writer
from core.store.pg_direct import DirectConnection
from tests.test_db_pool import kill_backends

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url, pool_size=2)
    async with database.core_transaction() as transaction:
        await transaction.conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
    yield database
    await database.close()


async def server_states(pg_url: str) -> list[str]:
    """The state of every server process of the test's database (our own connections only)."""
    conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [row["state"] for row in rows]


async def test_an_error_is_the_one_sqlalchemy_raises_and_the_transaction_is_rolled_back(db: Database) -> None:
    duplicate = "INSERT INTO t VALUES (1), (1)"
    with pytest.raises(sa_exc.IntegrityError) as theirs:
        async with db.transaction() as session:
            await session.execute(text(duplicate))
    async with db.writer() as writer:
        with pytest.raises(sa_exc.IntegrityError) as ours:
            async with writer.transaction() as transaction:
                assert transaction.direct is not None
                await transaction.conn.execute(text("INSERT INTO t VALUES (7)"))
                await transaction.direct.fetch(duplicate.replace("(1), (1)", "($1), ($1)"), 1)
        # The same classes as SQLAlchemy's own statement (the retry and the HTTP answer go by them).
        assert type(ours.value.orig) is type(theirs.value.orig)
        assert getattr(ours.value.orig, "sqlstate", None) == "23505" and conflicted(ours.value)
        assert not ours.value.connection_invalidated
        # The row the failed transaction had written is gone, and the writer goes on on the same connection.
        async with writer.transaction() as transaction:
            assert transaction.direct is not None
            assert [tuple(row) for row in await transaction.direct.fetch("SELECT count(*) FROM t")] == [(0,)]
    assert "idle in transaction" not in await server_states(db.url)


@pytest.mark.parametrize("again", [False, True])
async def test_a_lost_connection_fails_its_transaction_and_is_replaced(db: Database, again: bool) -> None:
    async def restart() -> None:
        # As a server restart would; asyncpg hears of it a moment later.
        assert await kill_backends(db.url) >= 1
        await asyncio.sleep(0.1)

    writer = Writer(db, again=again)
    try:
        async with writer.transaction() as transaction:
            await transaction.conn.execute(text("INSERT INTO t VALUES (1)"))
        # Lost in the middle of a transaction: that one fails as SQLAlchemy's would (answered 503), invalidated.
        with pytest.raises((sa_exc.OperationalError, sa_exc.InterfaceError)) as lost:
            async with writer.transaction() as transaction:
                assert transaction.direct is not None
                await restart()
                await transaction.direct.fetch("INSERT INTO t VALUES ($1)", 2)
        assert lost.value.connection_invalidated
        async with writer.transaction() as transaction:
            assert transaction.direct is not None
            await transaction.direct.fetch("INSERT INTO t VALUES ($1)", 3)
        # Lost between two transactions: the writer sees it and takes another connection, without an error.
        await restart()
        async with writer.transaction() as transaction:
            assert transaction.direct is not None
            await transaction.direct.fetch("INSERT INTO t VALUES ($1)", 4)
    finally:
        await writer.close()
    async with db.sessions() as session:
        assert list((await session.execute(text("SELECT id FROM t ORDER BY id"))).scalars()) == [1, 3, 4]


async def test_a_writer_that_writes_again_begins_the_next_transaction_with_the_commit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    send = DirectConnection.execute

    async def execute(direct: DirectConnection, sql: str) -> None:
        sent.append(sql)
        await send(direct, sql)

    monkeypatch.setattr(DirectConnection, "execute", execute)
    writer = Writer(db, again=True)
    try:
        for n in range(3):
            async with writer.transaction() as transaction:
                assert transaction.direct is not None
                await transaction.direct.fetch("INSERT INTO t VALUES ($1)", n)
        # Open and holding nothing between transactions; ended by the writer when it stops.
        assert await server_states(db.url) == ["idle in transaction"]
    finally:
        await writer.close()
    assert await server_states(db.url) == ["idle"]
    assert sent == ["BEGIN", "COMMIT; BEGIN", "COMMIT; BEGIN", "COMMIT; BEGIN", "ROLLBACK"]
    async with db.sessions() as session:
        assert list((await session.execute(text("SELECT id FROM t ORDER BY id"))).scalars()) == [0, 1, 2]
