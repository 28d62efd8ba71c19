"""The audit log: who did what to which approval, append-only and hash-chained so edits and deletions show.

Each row stores the hash of the row before it: hash = sha256(prev_hash + canonical JSON of the row). Appends
are serialized (one lock row), so the chain never forks across replicas. `verify_chain` walks the log and
reports the first row that was edited or deleted. Secrets never enter the log: tokens are recorded by their
key id and a hash of their nonce, never by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.common import UtcDatetime
from core.store import audit as audit_store
from core.store.db import Database
from core.store.tables import AuditRow


class AuditEntry(BaseModel):
    """One audit row as the API shows it."""

    seq: int
    at: UtcDatetime
    tenant: str | None = None
    type: str
    approval_id: str | None = None
    alert_id: str | None = None
    actor: str | None = None
    actor_platform: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str


def entry_from_row(row: AuditRow) -> AuditEntry:
    """A stored row as a model."""
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        tenant=row.tenant,
        type=row.type,
        approval_id=row.approval_id,
        alert_id=row.alert_id,
        actor=row.actor,
        actor_platform=row.actor_platform,
        data=dict(row.data or {}),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


async def list_entries(
    *,
    db: Database,
    tenants: list[str] | None,
    approval_id: str | None = None,
    alert_id: str | None = None,
    actor: str | None = None,
    type: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> tuple[list[AuditEntry], int | None]:
    """Audit entries newest first, filtered; the page and the last seq when there is more."""
    async with db.read() as session:
        rows, last = await audit_store.list_rows(
            session=session,
            tenants=tenants,
            approval_id=approval_id,
            alert_id=alert_id,
            actor=actor,
            type=type,
            before_seq=before_seq,
            limit=limit,
        )
        return [entry_from_row(row) for row in rows], last


async def record(*, session: AsyncSession, db: Database, **fields: Any) -> None:
    """Append an audit row (row_params' fields) in the caller's transaction; it is chained into the log when the
    transaction commits."""
    await audit_store.append(session=session, db=db, params=row_params(**fields))


def row_params(**fields: Any) -> dict[str, Any]:
    """What record() appends, as the parameters of the statement that appends it, perhaps with other writes:
    audit_store.append_params of type, at, tenant, approval_id, alert_id, actor, actor_platform and data, the
    data without secrets."""
    return audit_store.append_params(**fields)


async def record_now(*, db: Database, type: str, at: datetime, **fields: Any) -> None:
    """Append an audit row in a transaction of its own."""
    async with db.transaction() as session:
        await record(session=session, db=db, type=type, at=at, **fields)


@dataclass(frozen=True)
class ChainReport:
    """The outcome of walking the chain: ok, how many rows were checked, and the first problem found."""

    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    problem: str | None = None
    seq: int | None = None


async def verify_chain(*, db: Database) -> ChainReport:
    """Walk the whole log; report the first edited, deleted or reordered row, or a truncated tail."""
    async with db.read() as session:
        head_seq, head_hash = await audit_store.head(session=session)
    previous_hash = audit_store.GENESIS_HASH
    expected = 1
    count = 0
    async for row in audit_store.walk(db=db):
        count += 1
        if row.seq != expected:
            gap = f"{expected}" if row.seq == expected + 1 else f"{expected} to {row.seq - 1}"
            return ChainReport(False, count, head_seq, head_hash, f"row(s) {gap} deleted", expected)
        if row.prev_hash != previous_hash:
            return ChainReport(
                False, count, head_seq, head_hash, f"row {row.seq} does not follow row {row.seq - 1}", row.seq
            )
        if audit_store.row_hash(previous_hash, row) != row.hash:
            return ChainReport(False, count, head_seq, head_hash, f"row {row.seq} was edited", row.seq)
        previous_hash = row.hash
        expected += 1
    last = expected - 1
    if head_seq != last:
        if head_seq > last:
            problem = f"row(s) {last + 1} to {head_seq} deleted from the end"
            return ChainReport(False, count, head_seq, head_hash, problem, last + 1)
        return ChainReport(False, count, head_seq, head_hash, f"the head row says {head_seq}, the log has {last}", last)
    if head_hash != previous_hash:
        return ChainReport(False, count, head_seq, head_hash, f"row {last} was edited (the head disagrees)", last)
    return ChainReport(True, count, head_seq, head_hash)
