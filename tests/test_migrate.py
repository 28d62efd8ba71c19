"""Schema upgrades at start: replicas that start together on one PostgreSQL database upgrade it once, in turn."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from core.store import migrate
from core.store.db import Database
from core.store.tables import Base
from tests.test_replicas import pg_url

__all__ = ["pg_url"]  # the fixture (a fresh PostgreSQL database, or a skip with the reason), shared with test_replicas
pytestmark = pytest.mark.postgres

REPLICAS = 4


async def schema_differences(db: Database) -> list[object]:
    """What the database's schema lacks or has beyond the models (nothing, when the upgrade is right)."""

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as conn:
        return await conn.run_sync(diff)


async def test_replicas_starting_together_all_upgrade_and_the_schema_is_right(pg_url: str) -> None:
    # One engine per replica, as separate processes would have; every upgrade starts before any has finished.
    replicas = [Database(pg_url) for _ in range(REPLICAS)]
    try:
        # Unserialized upgrades can block each other on the catalog for good: fail in time rather than hang.
        async with asyncio.timeout(60):
            outcomes = await asyncio.gather(*(migrate.upgrade(db) for db in replicas), return_exceptions=True)
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        for db in replicas:
            assert await migrate.current_revision(db) == migrate.head_revision()
        assert await schema_differences(replicas[0]) == []
    finally:
        for db in replicas:
            await db.close()


async def test_an_upgrade_waits_while_another_holds_the_migration_lock(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ackbot.db")
    holder = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    db = Database(pg_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", migrate.MIGRATION_LOCK_KEY)
        upgrading = asyncio.create_task(migrate.upgrade(db))
        await asyncio.sleep(1.0)
        assert not upgrading.done()
        assert "waiting for another replica's schema upgrade to finish" in caplog.text
        assert await holder.fetchval("SELECT to_regclass('alembic_version')") is None
        await holder.execute("SELECT pg_advisory_unlock($1)", migrate.MIGRATION_LOCK_KEY)
        await asyncio.wait_for(upgrading, timeout=30)
        assert await migrate.current_revision(db) == migrate.head_revision()
        # The upgrade's lock ended with its transaction: another session takes it at once.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", migrate.MIGRATION_LOCK_KEY) is True
    finally:
        await holder.close()
        await db.close()
