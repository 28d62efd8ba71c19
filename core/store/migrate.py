"""Alembic, driven from code: `ackbot db upgrade`, `ackbot serve` at start, and the readiness check."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from core.store.db import Database

log = logging.getLogger("ackbot.db")

MIGRATIONS = Path(__file__).with_name("migrations")
# The PostgreSQL advisory lock that serializes schema upgrades across replicas: a fixed 64-bit number that no other
# advisory lock of ackbot uses ("ackmig" in ASCII; core.store.signing_keys has "ackbot").
MIGRATION_LOCK_KEY = 0x61636B6D6967


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest migration this code knows."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _wait_for_other_upgrades(connection: Connection) -> None:
    # Replicas started together would each find the schema missing and create it twice. The transaction-level lock
    # makes the second wait; it is released by the very commit (or rollback) that ends the upgrade, so it can never
    # stay held on a pooled connection. Once it has the lock, Alembic reads the version the first one committed.
    acquired = connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    if not acquired.scalar():
        log.info("waiting for another replica's schema upgrade to finish")
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to revision on the database's own engine; on PostgreSQL one replica at a time."""
    config = alembic_config(db.url)

    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            _wait_for_other_upgrades(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    log.info("database schema at revision %s", await current_revision(db))


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None before the first migration."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)
