"""Silences: rows in, rows out; which are in force is a question of starts_at <= now < ends_at."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database
from core.store.tables import SilenceRevisionRow, SilenceRow

_REVISION_ROW = 1


async def _bump(session: AsyncSession, db: Database) -> None:
    # The row lock of this upsert orders concurrent writers, so the revision strictly increases.
    table = SilenceRevisionRow.__table__
    await session.execute(
        db.insert(table)
        .values(id=_REVISION_ROW, revision=1)
        .on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[table.c.id], set_={"revision": table.c.revision + 1}
        )
    )


# Read before every group of events that has actions: built once (building a statement costs more than running it).
_REVISION_QUERY = select(SilenceRevisionRow.revision).where(SilenceRevisionRow.id == _REVISION_ROW)


async def revision(*, session: AsyncSession) -> int:
    """A number that changes whenever any silence is created or ended (0 before the first)."""
    value = await session.scalar(_REVISION_QUERY)
    return int(value or 0)


async def add(*, session: AsyncSession, db: Database, row: SilenceRow) -> None:
    """Store a new silence in the caller's transaction."""
    session.add(row)
    await session.flush()
    await _bump(session, db)


async def unexpired(*, session: AsyncSession, now: datetime) -> list[SilenceRow]:
    """Every silence of every tenant that has not ended yet (in force now, or pending)."""
    rows = await session.execute(select(SilenceRow).where(SilenceRow.ends_at > now).order_by(SilenceRow.id))
    return list(rows.scalars())


async def get(*, session: AsyncSession, silence_id: str) -> SilenceRow | None:
    """One silence by id."""
    return await session.get(SilenceRow, silence_id)


async def list_silences(
    *, session: AsyncSession, tenants: list[str] | None, state: str, now: datetime, limit: int
) -> list[SilenceRow]:
    """Silences by state (active, pending, expired, all), the ones ending soonest first."""
    query = select(SilenceRow)
    if tenants is not None:
        query = query.where(or_(SilenceRow.tenant.in_(tenants), SilenceRow.tenant == "*"))
    conditions: dict[str, Any] = {
        "active": (SilenceRow.starts_at <= now) & (SilenceRow.ends_at > now),
        "pending": SilenceRow.starts_at > now,
        "expired": SilenceRow.ends_at <= now,
    }
    if state in conditions:
        query = query.where(conditions[state])
    rows = await session.execute(query.order_by(SilenceRow.ends_at, SilenceRow.id).limit(limit))
    return list(rows.scalars())


async def expire(*, session: AsyncSession, db: Database, silence_id: str, now: datetime) -> bool:
    """End a silence now (kept for the record); False if it had already ended."""
    result = await session.execute(
        update(SilenceRow)
        .where(SilenceRow.id == silence_id, SilenceRow.ends_at > now)
        .values(ends_at=now, updated_at=now)
    )
    ended = bool(getattr(result, "rowcount", 0))
    if ended:
        await _bump(session, db)
    return ended
