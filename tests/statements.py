"""What SQL a Database sends while a block runs, whichever way it goes out.

SQLAlchemy's cursor events see its own statements; some are sent by the driver itself, through
core.store.pg_direct.DirectConnection (asyncpg) or core.store.sqlite_driver.SqliteDirect, which are watched
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
async def recorded_statements(db: Database, *, boundaries: bool = False) -> AsyncIterator[list[str]]:
    """The statements db sends inside the block, in order (the list fills as they are sent); BEGIN, COMMIT and
    ROLLBACK only with boundaries."""
    statements: list[str] = []

    def record(statement: str, _parameters: tuple[Any, ...]) -> None:
        text = " ".join(statement.split())
        if boundaries or not text.upper().startswith(_BOUNDARIES):
            statements.append(text)

    async with _watching(db, record):
        yield statements


@asynccontextmanager
async def recorded_calls(db: Database) -> AsyncIterator[list[tuple[str, tuple[Any, ...]]]]:
    """The statements db sends inside the block as sent, with their parameters (a statement sent many times by
    executemany, with its first parameter set)."""
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def record(statement: str, parameters: tuple[Any, ...]) -> None:
        if not statement.lstrip().upper().startswith(_BOUNDARIES):
            calls.append((statement, parameters))

    async with _watching(db, record):
        yield calls


@asynccontextmanager
async def _watching(db: Database, record: Callable[[str, tuple[Any, ...]], None]) -> AsyncIterator[None]:
    def on_cursor(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        record(statement, tuple(parameters or ()))

    def watching(method: Callable[..., Any], many: bool) -> Callable[..., Any]:
        async def sent(self: Any, sql: str, *args: Any) -> Any:
            record(sql, tuple(args[0][0] if many and args and args[0] else args))
            return await method(self, sql, *args)

        return sent

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_cursor)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("execute", "fetch", "executemany"):
            method = getattr(pg_direct.DirectConnection, name)
            patch.setattr(pg_direct.DirectConnection, name, watching(method, name == "executemany"))
        for name in ("fetch", "executemany"):
            method = getattr(sqlite_driver.SqliteDirect, name)
            patch.setattr(sqlite_driver.SqliteDirect, name, watching(method, name == "executemany"))
        try:
            yield
        finally:
            event.remove(engine, "before_cursor_execute", on_cursor)
