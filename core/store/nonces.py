"""Spent ack-token nonces: a nonce is spent by inserting it, and the primary key lets that happen once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database
from core.store.tables import SpentNonceRow


async def spend(
    *, session: AsyncSession, db: Database, nonce: str, approval_id: str, now: datetime, expires_at: datetime
) -> bool:
    """Spend a nonce inside the caller's transaction; False if it was spent before (a replay)."""
    table = SpentNonceRow.__table__
    statement = (
        db.insert(table)
        .values(nonce=nonce, approval_id=approval_id, spent_at=now, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=[table.c.nonce])  # type: ignore[attr-defined]
    )
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


async def is_spent(*, session: AsyncSession, nonce: str) -> bool:
    """Whether a nonce was spent already (for verify, which must not spend it)."""
    found = await session.execute(select(SpentNonceRow.nonce).where(SpentNonceRow.nonce == nonce))
    return found.scalar_one_or_none() is not None


async def prune(*, db: Database, before: datetime) -> int:
    """Forget nonces of tokens that expired before `before`: such a token is refused as expired anyway."""
    async with db.transaction() as session:
        result = await session.execute(delete(SpentNonceRow).where(SpentNonceRow.expires_at < before))
        return int(getattr(result, "rowcount", 0) or 0)
