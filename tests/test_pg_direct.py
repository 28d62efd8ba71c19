"""PostgreSQL writers: transactions and statements sent by asyncpg itself, under SQLAlchemy's connection. Their
errors must be SQLAlchemy's, a lost connection must be replaced, and nothing may be left open on the server."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy import exc as sa_exc

from core.ingest import conflicted
from core.store import pg_direct
from core.store.db import Database, direct_of
from core.store.pg_direct import DirectConnection, Keeper, Statement
from core.store.tables import JsonDoc, UtcDateTime
from tests.test_db_pool import kill_backends

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url, pool_size=2)
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE t (id integer PRIMARY KEY)"))
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
    with pytest.raises(sa_exc.IntegrityError) as ours:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES (7)"))
            await (await direct_of(session)).fetch(duplicate.replace("(1), (1)", "($1), ($1)"), 1)
    # The same class as SQLAlchemy's own statement raises, and the same sqlstate underneath (the retry and the
    # HTTP answer go by them).
    assert type(ours.value) is type(theirs.value)
    assert getattr(ours.value.orig, "sqlstate", None) == getattr(theirs.value.orig, "sqlstate", None) == "23505"
    assert conflicted(ours.value)
    assert not ours.value.connection_invalidated
    # The row the failed transaction had written is gone, and the next transaction goes on.
    async with db.transaction() as session:
        assert [tuple(row) for row in await (await direct_of(session)).fetch("SELECT count(*) FROM t")] == [(0,)]
    assert "idle in transaction" not in await server_states(db.url)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO t VALUES (NULL)",  # a not-null violation
        "SELEC 1",  # a syntax error
        "SELECT 1 / 0",  # no class of its own: DBAPIError
        "SELECT * FROM nowhere",
    ],
)
async def test_other_errors_are_the_ones_sqlalchemy_raises(db: Database, statement: str) -> None:
    errors = []
    for direct in (False, True):
        with pytest.raises(sa_exc.DBAPIError) as raised:
            async with db.transaction() as session:
                if direct:
                    await (await direct_of(session)).fetch(statement)
                else:
                    await session.execute(text(statement))
        error = raised.value
        orig: Any = error.orig
        errors.append(
            (type(error), type(orig), str(orig), orig.sqlstate, type(orig.__cause__), error.connection_invalidated)
        )
    assert errors[0] == errors[1]


async def test_a_connection_found_lost_has_the_pool_check_the_others(db: Database) -> None:
    autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
    # Two pooled connections, one given back a moment ago: too recently used to be pinged at its next checkout.
    lost = await DirectConnection.connect(autocommit)
    returned = await DirectConnection.connect(autocommit)
    await returned.close()
    assert await kill_backends(db.url) >= 2
    await asyncio.sleep(0.1)  # as a server restart would; asyncpg hears of it a moment later
    with pytest.raises(sa_exc.InterfaceError) as raised:
        await lost.fetch("SELECT 1")
    assert raised.value.connection_invalidated and not lost.usable
    await lost.close()
    # The server went away: the pool checks the other connection before it hands it out, and replaces it.
    async with db.read() as session:
        assert (await session.execute(text("SELECT 2"))).scalar_one() == 2


async def test_a_lost_connection_fails_its_transaction_and_is_replaced(db: Database) -> None:
    async def restart() -> None:
        # As a server restart would; asyncpg hears of it a moment later.
        assert await kill_backends(db.url) >= 1
        await asyncio.sleep(0.1)

    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t VALUES (1)"))
    # Lost in the middle of a transaction: that one fails as SQLAlchemy's would (answered 503), invalidated.
    with pytest.raises((sa_exc.OperationalError, sa_exc.InterfaceError)) as lost:
        async with db.transaction() as session:
            direct = await direct_of(session)
            await restart()
            await direct.fetch("INSERT INTO t VALUES ($1)", 2)
    assert lost.value.connection_invalidated
    async with db.transaction() as session:
        await (await direct_of(session)).fetch("INSERT INTO t VALUES ($1)", 3)
    # Lost between two transactions: the kept connection is found lost and replaced, without an error.
    await restart()
    async with db.transaction() as session:
        await (await direct_of(session)).fetch("INSERT INTO t VALUES ($1)", 4)
    async with db.read() as session:
        assert list((await session.execute(text("SELECT id FROM t ORDER BY id"))).scalars()) == [1, 3, 4]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements without parameters (BEGIN, COMMIT, ROLLBACK...) sent by asyncpg itself, in order."""
    sent: list[str] = []
    send = DirectConnection.execute

    async def execute(direct: DirectConnection, sql: str) -> None:
        sent.append(sql)
        await send(direct, sql)

    monkeypatch.setattr(DirectConnection, "execute", execute)
    return sent


async def test_a_write_transaction_is_begun_and_ended_by_asyncpg_and_leaves_nothing_open(
    db: Database, sent: list[str]
) -> None:
    for n in range(3):
        async with db.transaction() as session:
            await (await direct_of(session)).fetch("INSERT INTO t VALUES ($1)", n)
            await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": 10 + n})
    assert sent == ["BEGIN", "COMMIT"] * 3
    assert set(await server_states(db.url)) <= {"idle"}
    async with db.read() as session:
        assert list((await session.execute(text("SELECT id FROM t ORDER BY id"))).scalars()) == [0, 1, 2, 10, 11, 12]


async def test_a_write_that_writes_again_begins_the_next_transaction_with_its_commit(
    db: Database, sent: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        async with db.transaction(again=True) as session:
            await (await direct_of(session)).fetch("INSERT INTO t VALUES ($1)", n)
    # Open and holding nothing between the writes; a read never gets that connection.
    assert await server_states(db.url) == ["idle in transaction"]
    async with db.read() as session:
        assert list((await session.execute(text("SELECT id FROM t ORDER BY id"))).scalars()) == [0, 1, 2]
    assert sent == ["BEGIN", "COMMIT; BEGIN", "COMMIT; BEGIN", "COMMIT; BEGIN"]
    await db.tidy()  # taken by no write within the ping interval (just now: kept)
    assert "idle in transaction" in await server_states(db.url)
    later = types.SimpleNamespace(monotonic=lambda: time.monotonic() + 60)
    monkeypatch.setattr(pg_direct, "time", later)  # the Keeper's clock only, not the event loop's
    await db.tidy()  # no write took it: rolled back, the connection kept for the next one
    assert sent[-1] == "ROLLBACK" and set(await server_states(db.url)) <= {"idle"}
    async with db.transaction() as session:
        await (await direct_of(session)).fetch("INSERT INTO t VALUES ($1)", 3)
    assert sent[-2:] == ["BEGIN", "COMMIT"] and set(await server_states(db.url)) <= {"idle"}


_DOCS = Table(
    "docs",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("kind", String(20)),
    Column("doc", JsonDoc),
    Column("at", UtcDateTime()),
)


async def test_a_statement_sends_what_sqlalchemy_would_and_reads_back_the_same_values(db: Database) -> None:
    async with db.transaction() as session:
        await (await session.connection()).run_sync(_DOCS.metadata.create_all)
    when = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
    rows = [
        {"id": 1, "kind": "a", "doc": {"x": [1, "two"], "y": None}, "at": when},
        # Naive: UTC, as UtcDateTime binds it.
        {"id": 2, "kind": "b", "doc": {"x": 2}, "at": datetime(2026, 11, 22, 13, 0)},
    ]
    select_a = select(_DOCS).where(_DOCS.c.kind == "a")  # a literal the statement carries itself
    async with db.transaction() as session:
        direct = await direct_of(session)
        assert direct is not None
        await Statement(insert(_DOCS), keys=["id", "kind", "doc", "at"]).executemany(direct, rows)
        ours = await Statement(select_a).fetch(direct, {})
        theirs = (await session.execute(select_a)).all()
    assert [row._asdict() for row in ours] == [row._asdict() for row in theirs]
    assert ours[0].doc == {"x": [1, "two"], "y": None} and ours[0].at == when and ours[0].at.tzinfo is not None
    async with db.read() as session:
        second = (await session.execute(select(_DOCS.c.at).where(_DOCS.c.id == 2))).scalar_one()
    assert second == datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    # An IN list's SQL depends on its length: refused rather than sent wrong.
    async with db.transaction() as session:
        direct = await direct_of(session)
        assert direct is not None
        with pytest.raises(ValueError, match="IN list"):
            await Statement(select(_DOCS).where(_DOCS.c.kind.in_(["a", "b"]))).fetch(direct, {})


async def test_one_statement_writes_and_reads_hold_no_transaction_and_give_back_their_connections(
    db: Database,
) -> None:
    pool = db.engine.sync_engine.pool
    # A transaction that wrote has a transaction id: the statement after an INSERT is in another one, or not.
    alone = text("SELECT pg_current_xact_id_if_assigned() IS NULL")
    async with db.transaction(autocommit=True) as session:
        await session.execute(text("INSERT INTO t VALUES (1)"))
        assert (await session.execute(alone)).scalar_one() is True
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t VALUES (2)"))
        assert (await session.execute(alone)).scalar_one() is False
    async with db.read() as session:
        direct = await direct_of(session)
        assert direct is not None and await direct_of(session) is direct  # one per session
        assert [tuple(row) for row in await direct.fetch("SELECT count(*) FROM t")] == [(2,)]
        assert pool.checkedout() == 1
    # Kept for the next read or transaction, with nothing open on the server: no checkout from the pool again.
    assert pool.checkedout() == 1 and direct.usable
    assert set(await server_states(db.url)) <= {"idle"}
    async with db.transaction() as session:
        assert await direct_of(session) is direct
        await session.execute(text("INSERT INTO t VALUES (3)"))
    async with db.read() as session:
        assert await direct_of(session) is direct
    assert pool.checkedout() == 1
    await db.close()
    assert pool.checkedout() == 0


async def test_a_kept_connection_that_was_lost_is_replaced_without_an_error(db: Database) -> None:
    held = db.engine.sync_engine.pool.checkedout()  # the database's own kept connections
    keeper = Keeper(db.engine.execution_options(isolation_level="AUTOCOMMIT"), size=2, ping_after=0.0)
    try:
        first = await keeper.take()
        await keeper.give(first)
        assert await kill_backends(db.url) >= 1
        # Pinged before it is handed out again (ping_after 0), found lost, and replaced by a fresh one.
        second = await keeper.take()
        assert second is not first and second.usable and not first.usable
        assert [tuple(row) for row in await second.fetch("SELECT 1")] == [(1,)]
        # One that is in a transaction is not kept: it goes back to the pool (its transaction rolled back).
        await second.execute("BEGIN")
        await keeper.give(second)
        assert not second.usable
    finally:
        await keeper.close()
    assert db.engine.sync_engine.pool.checkedout() == held
