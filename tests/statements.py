"""What SQL a Database sends while a block runs, whichever way it goes out.

SQLAlchemy's cursor events see its own statements; some are sent by the driver itself, through
core.store.pg_direct.DirectConnection (asyncpg) or core.store.sqlite_driver.InlineDirect, which are watched
too. Transaction boundaries (BEGIN, COMMIT, ROLLBACK) are left out: on PostgreSQL SQLAlchemy's events never
saw them either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event

from core.store import pg_direct, sqlite_driver
from core.store.db import Database

_BOUNDARIES = ("BEGIN", "COMMIT", "ROLLBACK")


@asynccontextmanager
async def recorded_statements(db: Database) -> AsyncIterator[list[str]]:
    """The statements db sends inside the block, in order (the list fills as they are sent)."""
    statements: list[str] = []

    def record(statement: str) -> None:
        text = " ".join(statement.split())
        if not text.upper().startswith(_BOUNDARIES):
            statements.append(text)

    def on_cursor(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        record(statement)

    def watching(method: Callable[..., Any]) -> Callable[..., Any]:
        async def sent(self: Any, sql: str, *args: Any) -> Any:
            record(sql)
            return await method(self, sql, *args)

        return sent

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_cursor)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("execute", "fetch", "executemany"):
            patch.setattr(pg_direct.DirectConnection, name, watching(getattr(pg_direct.DirectConnection, name)))
        for name in ("fetch", "executemany"):
            patch.setattr(sqlite_driver.InlineDirect, name, watching(getattr(sqlite_driver.InlineDirect, name)))
        try:
            yield statements
        finally:
            event.remove(engine, "before_cursor_execute", on_cursor)
