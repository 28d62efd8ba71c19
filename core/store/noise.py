"""Dedup and throttle windows, kept in the database so every replica agrees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database
from core.store.tables import NoiseKeyRow


@dataclass(frozen=True)
class WindowDecision:
    admitted: bool
    window_until: datetime
    suppressed_before: int  # how many were held back in the window that just closed (for "N similar suppressed")
    suppressed_now: int  # how many are held back in the current window, this one included


async def admit(*, session: AsyncSession, db: Database, key: str, window: timedelta, now: datetime) -> WindowDecision:
    """Let the first occurrence of key in a window through and count the others, atomically."""
    until = now + window
    table = NoiseKeyRow.__table__
    open_window = table.c.window_until > now
    statement = (
        db.insert(table)
        .values(key=key, window_until=until, suppressed=0, carried=0)
        .on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[table.c.key],
            set_={
                # Every right-hand side reads the row as it was before this update, on both backends.
                "carried": case((open_window, table.c.carried), else_=table.c.suppressed),
                "suppressed": case((open_window, table.c.suppressed + 1), else_=0),
                "window_until": case((open_window, table.c.window_until), else_=until),
            },
        )
        .returning(table.c.window_until, table.c.suppressed, table.c.carried)
    )
    window_until, suppressed, carried = (await session.execute(statement)).one()
    admitted = suppressed == 0
    return WindowDecision(admitted, window_until, carried if admitted else 0, suppressed)


async def peek(*, session: AsyncSession, key: str, now: datetime) -> WindowDecision | None:
    """The open window for key, if any, without changing it (for dry runs)."""
    row = await session.get(NoiseKeyRow, key)
    if row is None or row.window_until <= now:
        return None
    return WindowDecision(False, row.window_until, 0, row.suppressed)
