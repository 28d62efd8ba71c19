"""The audit log's storage: hash-chained appends serialized by one lock row, filtered reads, and a chain walk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database
from core.store.tables import AuditHeadRow, AuditRow

GENESIS_HASH = "0" * 64
_HEAD_ID = 1


def canonical_json(row: AuditRow) -> str:
    """The row's content as canonical JSON: sorted keys, no spaces, UTC ISO time; what its hash covers."""
    document = {
        "seq": row.seq,
        "at": row.at.astimezone(UTC).isoformat(),
        "tenant": row.tenant,
        "type": row.type,
        "approval_id": row.approval_id,
        "alert_id": row.alert_id,
        "actor": row.actor,
        "actor_platform": row.actor_platform,
        "data": row.data,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, row: AuditRow) -> str:
    """sha256(prev_hash + canonical JSON of the row), hex."""
    return hashlib.sha256((prev_hash + canonical_json(row)).encode("utf-8")).hexdigest()


async def append(
    *,
    session: AsyncSession,
    db: Database,
    type: str,
    at: datetime,
    tenant: str | None = None,
    approval_id: str | None = None,
    alert_id: str | None = None,
    actor: str | None = None,
    actor_platform: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditRow:
    """Append one row inside the caller's transaction, chained to the last one.

    The head row is locked (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers),
    so concurrent appends queue and the chain never forks. Call it last in a transaction: the lock is held
    until commit.
    """
    head_table = AuditHeadRow.__table__
    await session.execute(
        db.insert(head_table)
        .values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH)
        .on_conflict_do_nothing(index_elements=[head_table.c.id])  # type: ignore[attr-defined]
    )
    query = select(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID)
    if db.is_postgres:
        query = query.with_for_update()
    head = (await session.execute(query.execution_options(populate_existing=True))).scalar_one()
    # Round-trip the data through JSON now, so the hash is computed over exactly what the database returns.
    stored = json.loads(json.dumps(data or {}, default=str))
    row = AuditRow(
        seq=head.seq + 1,
        at=at,
        tenant=tenant,
        type=type,
        approval_id=approval_id,
        alert_id=alert_id,
        actor=actor,
        actor_platform=actor_platform,
        data=stored,
        prev_hash=head.hash,
        hash="",
    )
    row.hash = row_hash(head.hash, row)
    session.add(row)
    head.seq = row.seq
    head.hash = row.hash
    await session.flush()
    return row


async def list_rows(
    *,
    session: AsyncSession,
    tenants: list[str] | None,
    approval_id: str | None = None,
    alert_id: str | None = None,
    actor: str | None = None,
    type: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> tuple[list[AuditRow], int | None]:
    """Rows newest first, filtered; returns the page and the last seq when there is more."""
    query = select(AuditRow)
    if tenants is not None:
        query = query.where(AuditRow.tenant.in_(tenants))
    for column, value in (
        (AuditRow.approval_id, approval_id),
        (AuditRow.alert_id, alert_id),
        (AuditRow.actor, actor),
        (AuditRow.type, type),
    ):
        if value is not None:
            query = query.where(column == value)
    if before_seq is not None:
        query = query.where(AuditRow.seq < before_seq)
    rows = list((await session.execute(query.order_by(AuditRow.seq.desc()).limit(limit + 1))).scalars())
    page = rows[:limit]
    return page, (page[-1].seq if len(rows) > limit else None)


async def head(*, session: AsyncSession) -> tuple[int, str]:
    """The recorded last (seq, hash); (0, genesis) for an empty log."""
    row = await session.get(AuditHeadRow, _HEAD_ID)
    return (row.seq, row.hash) if row is not None else (0, GENESIS_HASH)


async def walk(*, db: Database, batch: int = 1000) -> AsyncIterator[AuditRow]:
    """Every row in seq order, read in batches (the log can be long)."""
    last = 0
    while True:
        async with db.sessions() as session:
            rows = list(
                (
                    await session.execute(
                        select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq).limit(batch)
                    )
                ).scalars()
            )
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last = rows[-1].seq
