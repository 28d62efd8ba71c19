"""The outbox: deliveries are created with the event, claimed by workers, and settled once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Delivery, DeliveryAttempt, DeliveryPurpose, DeliveryStatus
from core.store.convert import attempt_from_row, delivery_from_row
from core.store.db import Database, new_id
from core.store.pagination import decode_cursor
from core.store.tables import DeliveryAttemptRow, DeliveryRow

CLAIMABLE = (DeliveryStatus.pending, DeliveryStatus.failed)


def delivery_values(
    *,
    tenant: str,
    channel: str,
    idempotency_key: str,
    now: datetime,
    purpose: DeliveryPurpose = DeliveryPurpose.notify,
    event_id: str | None = None,
    alert_id: str | None = None,
    approval_id: str | None = None,
    rule: str | None = None,
    action_index: int | None = None,
    target: str | None = None,
    suppressed_count: int = 0,
    not_before: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of a new pending delivery (for a bulk insert; new_delivery makes the ORM row)."""
    return dict(
        id=new_id("dlv"),
        tenant=tenant,
        event_id=event_id,
        alert_id=alert_id,
        approval_id=approval_id,
        rule=rule,
        action_index=action_index,
        channel=channel,
        target=target,
        purpose=purpose,
        idempotency_key=idempotency_key,
        status=DeliveryStatus.pending,
        attempts=0,
        next_attempt_at=not_before or now,
        suppressed_count=suppressed_count,
        extra=extra,
        created_at=now,
        updated_at=now,
    )


def new_delivery(**columns: Any) -> DeliveryRow:
    """A pending delivery row, for the caller to add to its transaction (arguments as delivery_values)."""
    return DeliveryRow(**delivery_values(**columns))


async def claim(*, db: Database, worker: str, now: datetime, lease: timedelta, limit: int) -> list[DeliveryRow]:
    """Take up to limit due deliveries: pending or failed ones that are due, and sending ones whose lease ran out."""
    due = or_(
        and_(DeliveryRow.status.in_(CLAIMABLE), DeliveryRow.next_attempt_at <= now),
        and_(DeliveryRow.status == DeliveryStatus.sending, DeliveryRow.lease_until < now),
    )
    async with db.transaction() as session:
        candidates = select(DeliveryRow.id).where(due).order_by(DeliveryRow.next_attempt_at).limit(limit)
        if db.is_postgres:
            # Replicas skip each other's rows instead of waiting on them.
            candidates = candidates.with_for_update(skip_locked=True)
        ids = list((await session.execute(candidates)).scalars())
        if not ids:
            return []
        rows = (
            await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(ids), due)
                .values(status=DeliveryStatus.sending, lease_until=now + lease, claimed_by=worker, updated_at=now)
                .returning(DeliveryRow)
            )
        ).scalars()
        return list(rows)


async def settle(
    *,
    db: Database,
    delivery_id: str,
    worker: str,
    started_at: datetime,
    now: datetime,
    outcome: str,
    status: DeliveryStatus,
    next_attempt_at: datetime | None = None,
    status_code: int | None = None,
    error: str | None = None,
    message_ref: dict[str, Any] | None = None,
) -> bool:
    """Record one attempt and the delivery's new state; False if our lease was lost to another worker."""
    async with db.transaction() as session:
        values: dict[str, Any] = {
            "status": status,
            "attempts": DeliveryRow.attempts + 1,
            "lease_until": None,
            "claimed_by": None,
            "updated_at": now,
            "last_error": error,
        }
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if message_ref is not None:
            values["message_ref"] = message_ref
        if status is DeliveryStatus.sent:
            values["sent_at"] = now
        result = await session.execute(
            update(DeliveryRow)
            .where(
                DeliveryRow.id == delivery_id,
                DeliveryRow.claimed_by == worker,
                DeliveryRow.status == DeliveryStatus.sending,
            )
            .values(**values)
            .returning(DeliveryRow.attempts)
        )
        number = result.scalar_one_or_none()
        if number is None:
            return False
        session.add(
            DeliveryAttemptRow(
                delivery_id=delivery_id,
                number=number,
                started_at=started_at,
                finished_at=now,
                outcome=outcome,
                status_code=status_code,
                error=error,
            )
        )
        return True


async def get(*, session: AsyncSession, delivery_id: str) -> Delivery | None:
    """One delivery by id."""
    row = await session.get(DeliveryRow, delivery_id)
    return delivery_from_row(row) if row is not None else None


async def attempts(*, session: AsyncSession, delivery_id: str) -> list[DeliveryAttempt]:
    """Every attempt of a delivery, oldest first."""
    rows = await session.execute(
        select(DeliveryAttemptRow).where(DeliveryAttemptRow.delivery_id == delivery_id).order_by(DeliveryAttemptRow.id)
    )
    return [attempt_from_row(r) for r in rows.scalars()]


async def list_deliveries(
    *,
    session: AsyncSession,
    tenants: list[str] | None,
    status: DeliveryStatus | None = None,
    channel: str | None = None,
    event_id: str | None = None,
    alert_id: str | None = None,
    approval_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Delivery], str | None]:
    """Deliveries newest first, filtered; returns the page and the last id when there is more."""
    query = select(DeliveryRow)
    if tenants is not None:
        query = query.where(DeliveryRow.tenant.in_(tenants))
    for column, value in (
        (DeliveryRow.status, status),
        (DeliveryRow.channel, channel),
        (DeliveryRow.event_id, event_id),
        (DeliveryRow.alert_id, alert_id),
        (DeliveryRow.approval_id, approval_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        query = query.where(DeliveryRow.id < decode_cursor(cursor))
    rows = (await session.execute(query.order_by(DeliveryRow.id.desc()).limit(limit + 1))).scalars().all()
    page = [delivery_from_row(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def retry_dead(*, session: AsyncSession, delivery_id: str, now: datetime) -> bool:
    """Put a dead (or failed) delivery back in the queue by hand, with a fresh attempt budget."""
    result = await session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.id == delivery_id, DeliveryRow.status.in_((DeliveryStatus.dead, DeliveryStatus.failed)))
        .values(status=DeliveryStatus.pending, attempts=0, next_attempt_at=now, updated_at=now, last_error=None)
    )
    return bool(getattr(result, "rowcount", 0))


async def latest_message_ref(
    *, session: AsyncSession, channel: str, target: str | None, alert_id: str | None, approval_id: str | None
) -> dict[str, Any] | None:
    """The reference of the first message sent about this alert or approval on this channel and target."""
    query = select(DeliveryRow.message_ref).where(
        DeliveryRow.channel == channel,
        DeliveryRow.status == DeliveryStatus.sent,
        DeliveryRow.purpose == DeliveryPurpose.notify,
        DeliveryRow.message_ref.is_not(None),
    )
    same_target = DeliveryRow.target == target if target is not None else DeliveryRow.target.is_(None)
    query = query.where(same_target)
    if approval_id is not None:
        query = query.where(DeliveryRow.approval_id == approval_id)
    elif alert_id is not None:
        query = query.where(DeliveryRow.alert_id == alert_id)
    else:
        return None
    ref = (await session.execute(query.order_by(DeliveryRow.created_at).limit(1))).scalar_one_or_none()
    return ref


async def count_by_status(*, session: AsyncSession) -> dict[tuple[str, str], int]:
    """Deliveries counted by (channel, status), for gauges."""
    rows = await session.execute(
        select(DeliveryRow.channel, DeliveryRow.status, func.count()).group_by(DeliveryRow.channel, DeliveryRow.status)
    )
    return {(channel, status): count for channel, status, count in rows.all()}
