"""The audit log's storage: hash-chained appends serialized by one lock row, filtered reads, and a chain walk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
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


_AUDIT = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)
# Takes the next seq and returns it with the previous row's hash: the UPDATE holds the head row's lock (PostgreSQL;
# SQLite's BEGIN IMMEDIATE already serializes writers) until commit, so concurrent appends queue and never fork.
_TAKE_NEXT = (
    update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(seq=_HEAD.c.seq + 1).returning(_HEAD.c.seq, _HEAD.c.hash)
)


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

    Three statements (two on PostgreSQL): take the next seq and the previous hash from the head row, which
    locks it until commit; then insert the row and record its hash in the head. Call it last in a transaction:
    other appends wait for the head row until this one commits.
    """
    taken = (await session.execute(_TAKE_NEXT)).first()
    if taken is None:
        # The first append ever: create the head, then take it (two first appends meet on its primary key).
        await session.execute(
            db.insert(_HEAD)
            .values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH)
            .on_conflict_do_nothing(index_elements=[_HEAD.c.id])  # type: ignore[attr-defined]
        )
        taken = (await session.execute(_TAKE_NEXT)).one()
    seq, prev_hash = int(taken[0]), str(taken[1])
    # Round-trip the data through JSON now, so the hash is computed over exactly what the database returns.
    stored = json.loads(json.dumps(data or {}, default=str))
    row = AuditRow(
        seq=seq,
        at=at,
        tenant=tenant,
        type=type,
        approval_id=approval_id,
        alert_id=alert_id,
        actor=actor,
        actor_platform=actor_platform,
        data=stored,
        prev_hash=prev_hash,
        hash="",
    )
    row.hash = row_hash(prev_hash, row)
    values = {column.key: getattr(row, column.key) for column in _AUDIT.columns}
    insert_row = insert(_AUDIT).values(**values)
    set_hash = update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(hash=row.hash)
    if db.is_postgres:
        # One round trip while the head is locked: the insert rides along as a data-modifying WITH.
        await session.execute(set_hash.add_cte(insert_row.cte("appended")))
    else:
        await session.execute(insert_row)
        await session.execute(set_hash)
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
