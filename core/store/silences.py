"""Silences: rows in, rows out; which are in force is a question of starts_at <= now < ends_at."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.tables import SilenceRow


async def add(*, session: AsyncSession, row: SilenceRow) -> None:
    """Store a new silence in the caller's transaction."""
    session.add(row)
    await session.flush()


async def active(*, session: AsyncSession, tenant: str, now: datetime) -> list[SilenceRow]:
    """The silences in force now for a tenant (its own and those for every tenant)."""
    rows = await session.execute(
        select(SilenceRow)
        .where(SilenceRow.ends_at > now, SilenceRow.starts_at <= now, SilenceRow.tenant.in_((tenant, "*")))
        .order_by(SilenceRow.id)
    )
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


async def expire(*, session: AsyncSession, silence_id: str, now: datetime) -> bool:
    """End a silence now (kept for the record); False if it had already ended."""
    result = await session.execute(
        update(SilenceRow)
        .where(SilenceRow.id == silence_id, SilenceRow.ends_at > now)
        .values(ends_at=now, updated_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
