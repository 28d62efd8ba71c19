"""Spent ack-token nonces: a nonce is spent by inserting it, and the primary key lets that happen once."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database, direct_of
from core.store.pg_direct import Statement
from core.store.tables import SpentNonceRow

_NONCES = cast(Table, SpentNonceRow.__table__)
# Built once per backend: spending a nonce is on every click's path.
_SPEND = {
    postgres: (postgresql.insert(_NONCES) if postgres else sqlite.insert(_NONCES)).on_conflict_do_nothing(
        index_elements=[_NONCES.c.nonce]
    )
    for postgres in (True, False)
}
# Sent by the driver itself (see pg_direct.Statement); a row if it was spent now.
_DIRECT_SPEND = {
    postgres: Statement(
        _SPEND[postgres].returning(_NONCES.c.nonce), keys=("nonce", "approval_id", "spent_at", "expires_at")
    )
    for postgres in (True, False)
}


async def spend(
    *, session: AsyncSession, db: Database, nonce: str, approval_id: str, now: datetime, expires_at: datetime
) -> bool:
    """Spend a nonce inside the caller's transaction; False if it was spent before (a replay)."""
    values = {"nonce": nonce, "approval_id": approval_id, "spent_at": now, "expires_at": expires_at}
    return bool(await _DIRECT_SPEND[db.is_postgres].fetch(await direct_of(session), values))


async def is_spent(*, session: AsyncSession, nonce: str) -> bool:
    """Whether a nonce was spent already (for verify, which must not spend it)."""
    found = await session.execute(select(SpentNonceRow.nonce).where(SpentNonceRow.nonce == nonce))
    return found.scalar_one_or_none() is not None


async def prune(*, db: Database, before: datetime) -> int:
    """Forget nonces of tokens that expired before `before`: such a token is refused as expired anyway."""
    async with db.single_statements() as session:
        result = await session.execute(delete(SpentNonceRow).where(SpentNonceRow.expires_at < before))
        return int(getattr(result, "rowcount", 0) or 0)
