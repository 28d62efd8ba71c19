"""The outbox: deliveries are created with the event, claimed by workers, and settled once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import Integer, String, any_, bindparam, func, insert, literal, or_, select, union_all, update
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.deliveries import Delivery, DeliveryAttempt, DeliveryPurpose, DeliveryStatus
from core.store.convert import attempt_from_row, delivery_from_row
from core.store.db import Database, direct_of, new_id
from core.store.pagination import decode_cursor
from core.store.pg_direct import Statement, json_values
from core.store.tables import DeliveryAttemptRow, DeliveryRow, table_of

CLAIMABLE = (DeliveryStatus.pending, DeliveryStatus.failed)
# A delivery as the dispatcher handles it: an ORM row made here, or a claimed row (Core's, or pg_direct's named
# tuple), with the same attribute names.
DeliveryRecord: TypeAlias = DeliveryRow | Row[Any]


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
        counted_failures=0,
        next_attempt_at=not_before or now,
        suppressed_count=suppressed_count,
        extra=extra,
        created_at=now,
        updated_at=now,
        lease_until=None,
        claimed_by=None,
    )


def claimed_values(values: dict[str, Any], *, worker: str, lease_until: datetime) -> dict[str, Any]:
    """A new delivery (delivery_values) inserted already claimed by `worker` until `lease_until`: no other worker
    takes it before, and it is reclaimed as abandoned after, like any claim whose worker went away."""
    return {**values, "status": DeliveryStatus.sending, "claimed_by": worker, "lease_until": lease_until}


_DELIVERY_COLUMNS = tuple(
    column.key
    for column in table_of(DeliveryRow).columns
    if column.key not in ("last_error", "message_ref", "sent_at", "failing_since")
)
_INSERT_DELIVERIES = insert(table_of(DeliveryRow))
# Sent by asyncpg itself inside a PostgreSQL write transaction (see pg_direct.Statement).
_DIRECT_INSERT_DELIVERIES = Statement(_INSERT_DELIVERIES, keys=_DELIVERY_COLUMNS)


async def insert_many(*, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert new deliveries (delivery_values) in the caller's transaction, with Core: none is read back."""
    if not rows:
        return
    await _DIRECT_INSERT_DELIVERIES.executemany(await direct_of(session), rows)


def insert_from_json(*, name: str, when: Any) -> Any:
    """PostgreSQL: an INSERT of new deliveries given as one JSON array parameter `name` (json_rows), made only
    when `when` holds (a SQL condition), for a statement that writes more than the deliveries (a CTE of it)."""
    table = table_of(DeliveryRow)
    rows = (
        func.jsonb_to_recordset(bindparam(name, type_=postgresql.JSONB()))
        .table_valued(*(sql_column(key, table.c[key].type) for key in _DELIVERY_COLUMNS))
        .render_derived(name="new_deliveries", with_types=True)
    )
    return insert(table).from_select(list(_DELIVERY_COLUMNS), select(*rows.c).where(when))


def json_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """New deliveries (delivery_values) as insert_from_json takes them: times as ISO 8601 text."""
    return [
        {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()} for row in rows
    ]


def new_delivery(**columns: Any) -> DeliveryRow:
    """A pending delivery row, for the caller to add to its transaction (arguments as delivery_values)."""
    return DeliveryRow(**delivery_values(**columns))


async def claim(*, db: Database, worker: str, now: datetime, lease: timedelta, limit: int) -> list[DeliveryRecord]:
    """Take up to limit due deliveries: pending or failed ones that are due, and sending ones whose lease ran out."""
    params = {"now": now, "b_lease_until": now + lease, "worker": worker, "limit": limit}
    # One statement, sent by the driver: on PostgreSQL it commits on its own, one round trip.
    async with db.transaction(autocommit=True) as session:
        return await _DIRECT_CLAIM[db.is_postgres].fetch(await direct_of(session), params)


# Built once (see _DIRECT_CLAIM): building a statement costs more than running it.
def _claim_statement(postgres: bool) -> Any:
    table = table_of(DeliveryRow)
    now = bindparam("now", type_=table.c.next_attempt_at.type)
    limit = bindparam("limit", type_=Integer())
    if postgres:
        # = ANY(array), which pg_direct.Statement can send (an IN list is rendered per execution).
        claimable = literal([status.value for status in CLAIMABLE], type_=postgresql.ARRAY(String()))
        waiting = (table.c.status == any_(claimable)) & (table.c.next_attempt_at <= now)
    else:
        # Equalities ORed, which SQLite's planner turns into an IN on the index (a literal IN list would be
        # rendered per execution).
        waiting = or_(*(table.c.status == status for status in CLAIMABLE)) & (table.c.next_attempt_at <= now)
    abandoned = (table.c.status == DeliveryStatus.sending) & (table.c.lease_until < now)
    # The two kinds of due row are looked up apart, each on the (status, next_attempt_at) index, and merged: one
    # WHERE with an OR of both cannot use the index, and scanned every delivery ever made at every poll.
    kinds = []
    for name, condition in (("waiting", waiting), ("abandoned", abandoned)):
        candidates = (
            select(table.c.id, table.c.next_attempt_at).where(condition).order_by(table.c.next_attempt_at).limit(limit)
        )
        if postgres:
            # Replicas skip each other's rows instead of waiting on them.
            candidates = candidates.with_for_update(skip_locked=True)
        found = candidates.cte(name)
        kinds.append(select(found.c.id, found.c.next_attempt_at))
    due = union_all(*kinds).subquery("due")
    # One statement: the candidates are chosen (and locked) in WITHs, which PostgreSQL runs once.
    chosen = select(due.c.id).order_by(due.c.next_attempt_at).limit(limit)
    # Core rows: the dispatcher reads them and changes nothing in place, so no ORM instances are made.
    return (
        update(table)
        .where(table.c.id.in_(chosen), or_(waiting, abandoned))
        .values(
            status=DeliveryStatus.sending,
            lease_until=bindparam("b_lease_until", type_=table.c.lease_until.type),
            claimed_by=bindparam("worker"),
            updated_at=now,
        )
        .returning(*table.c)
    )


_DIRECT_CLAIM = {postgres: Statement(_claim_statement(postgres)) for postgres in (True, False)}


def _settle_sent_statement() -> Any:
    # SQLite: the batch's ids as one JSON array, so that the statement is the same whatever their number.
    table = table_of(DeliveryRow)
    when = bindparam("when", type_=table.c.updated_at.type)
    return (
        update(table)
        .where(
            table.c.id.in_(json_values("ids")),
            table.c.claimed_by == bindparam("worker"),
            table.c.status == DeliveryStatus.sending,
        )
        .values(
            status=DeliveryStatus.sent,
            attempts=table.c.attempts + 1,
            lease_until=None,
            claimed_by=None,
            updated_at=when,
            last_error=None,
            failing_since=None,
            sent_at=when,
        )
        .returning(table.c.id, table.c.attempts)
    )


def _set_message_ref_statement() -> Any:
    table = table_of(DeliveryRow)
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(message_ref=bindparam("b_ref", type_=table.c.message_ref.type))
    )


# SQLite's settling, sent by the driver on the write transaction's connection (see pg_direct.Statement).
_DIRECT_SETTLE_SENT = Statement(_settle_sent_statement())
_DIRECT_SET_MESSAGE_REF = Statement(_set_message_ref_statement())
_DIRECT_INSERT_ATTEMPTS = Statement(
    insert(table_of(DeliveryAttemptRow)).values(
        {
            name: bindparam(name, type_=table_of(DeliveryAttemptRow).c[name].type)
            for name in ("delivery_id", "number", "started_at", "finished_at", "outcome", "status_code", "error")
        }
    )
)


@dataclass(frozen=True)
class Settlement:
    """The outcome of one attempt at a claimed delivery, to be recorded."""

    delivery_id: str
    started_at: datetime
    now: datetime
    outcome: str
    status: DeliveryStatus
    next_attempt_at: datetime | None = None
    status_code: int | None = None
    error: str | None = None
    message_ref: dict[str, Any] | None = None
    # When the delivery began failing (None: it is not failing, it was sent), and the tries held against its
    # max_attempts (None: unchanged).
    failing_since: datetime | None = None
    counted_failures: int | None = None


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
    settlement = Settlement(
        delivery_id=delivery_id,
        started_at=started_at,
        now=now,
        outcome=outcome,
        status=status,
        next_attempt_at=next_attempt_at,
        status_code=status_code,
        error=error,
        message_ref=message_ref,
    )
    return delivery_id in await settle_many(db=db, worker=worker, settlements=[settlement])


# PostgreSQL settles a batch in one statement, committed on its own: one round trip, where a transaction of three
# statements took five, each waiting for a turn of a busy loop.
# The attempts are numbered by the update, so a delivery whose lease was lost gets neither.
_SETTLE_BATCH = (
    "WITH batch AS (SELECT * FROM jsonb_to_recordset(CAST($1 AS jsonb)) AS b("
    "id text, status text, now timestamptz, next_attempt_at timestamptz, error text, ref jsonb, "
    "started_at timestamptz, outcome text, status_code integer, failing_since timestamptz, "
    "counted_failures integer)), "
    "settled AS ("
    "UPDATE deliveries AS d SET status = batch.status, attempts = d.attempts + 1, lease_until = NULL, "
    "claimed_by = NULL, updated_at = batch.now, last_error = batch.error, "
    "next_attempt_at = COALESCE(batch.next_attempt_at, d.next_attempt_at), "
    "failing_since = batch.failing_since, counted_failures = COALESCE(batch.counted_failures, d.counted_failures), "
    "message_ref = COALESCE(batch.ref, d.message_ref), "
    f"sent_at = CASE WHEN batch.status = '{DeliveryStatus.sent.value}' THEN batch.now ELSE d.sent_at END "
    f"FROM batch WHERE d.id = batch.id AND d.claimed_by = $2 AND d.status = '{DeliveryStatus.sending.value}' "
    "RETURNING d.id, d.attempts, batch.started_at, batch.now, batch.outcome, batch.status_code, batch.error), "
    "logged AS ("
    "INSERT INTO delivery_attempts (delivery_id, number, started_at, finished_at, outcome, status_code, error) "
    "SELECT id, attempts, started_at, now, outcome, status_code, error FROM settled) "
    "SELECT id FROM settled"
)


def _utc_text(moment: datetime) -> str:
    # As UtcDateTime binds it: a naive datetime is UTC, not the server session's time zone.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _settle_batch_document(settlements: Sequence[Settlement]) -> str:
    return json.dumps(
        [
            {
                "id": s.delivery_id,
                "status": s.status.value,
                "now": _utc_text(s.now),
                "next_attempt_at": _utc_text(s.next_attempt_at) if s.next_attempt_at else None,
                # PostgreSQL's text (and jsonb) cannot hold NUL; an error message that had one would never settle.
                "error": s.error.replace("\x00", "") if s.error is not None else None,
                "ref": s.message_ref,
                "started_at": _utc_text(s.started_at),
                "outcome": s.outcome,
                "status_code": s.status_code,
                "failing_since": _utc_text(s.failing_since) if s.failing_since else None,
                "counted_failures": s.counted_failures,
            }
            for s in settlements
        ]
    )


async def settle_many(*, db: Database, worker: str, settlements: Sequence[Settlement]) -> set[str]:
    """Record several attempts in one transaction; returns the ids settled (the others' leases were lost).

    On SQLite the sent ones, the common case, take one UPDATE together; all their attempt rows one INSERT.
    """
    if db.is_postgres:
        async with db.transaction(autocommit=True) as session:
            direct = await direct_of(session)
            rows = await direct.fetch(_SETTLE_BATCH, _settle_batch_document(settlements), worker)
        return {row["id"] for row in rows}
    numbers: dict[str, int] = {}
    async with db.transaction() as session:
        direct = await direct_of(session)
        sent = [s for s in settlements if s.status is DeliveryStatus.sent and s.error is None]
        if sent:
            ids = json.dumps([s.delivery_id for s in sent])
            params = {"ids": ids, "worker": worker, "when": max(s.now for s in sent)}
            result = await _DIRECT_SETTLE_SENT.fetch(direct, params)
            numbers.update({str(id_): int(number) for id_, number in result})
            refs = [
                {"b_id": s.delivery_id, "b_ref": s.message_ref}
                for s in sent
                if s.message_ref is not None and s.delivery_id in numbers
            ]
            if refs:
                # A CASE over the batch's refs would be a new statement each time: one UPDATE per ref instead.
                await _DIRECT_SET_MESSAGE_REF.executemany(direct, refs)
        for s in settlements:
            if s in sent:
                continue
            values = {
                "status": s.status,
                "attempts": DeliveryRow.attempts + 1,
                "lease_until": None,
                "claimed_by": None,
                "updated_at": s.now,
                "last_error": s.error,
                "failing_since": s.failing_since,
            }
            if s.counted_failures is not None:
                values["counted_failures"] = s.counted_failures
            if s.next_attempt_at is not None:
                values["next_attempt_at"] = s.next_attempt_at
            if s.message_ref is not None:
                values["message_ref"] = s.message_ref
            if s.status is DeliveryStatus.sent:
                values["sent_at"] = s.now
            number = (
                await session.execute(
                    update(DeliveryRow)
                    .where(
                        DeliveryRow.id == s.delivery_id,
                        DeliveryRow.claimed_by == worker,
                        DeliveryRow.status == DeliveryStatus.sending,
                    )
                    .values(**values)
                    .returning(DeliveryRow.attempts)
                )
            ).scalar_one_or_none()
            if number is not None:
                numbers[s.delivery_id] = int(number)
        attempts = [
            {
                "delivery_id": s.delivery_id,
                "number": numbers[s.delivery_id],
                "started_at": s.started_at,
                "finished_at": s.now,
                "outcome": s.outcome,
                "status_code": s.status_code,
                "error": s.error,
            }
            for s in settlements
            if s.delivery_id in numbers
        ]
        if attempts:
            await _DIRECT_INSERT_ATTEMPTS.executemany(direct, attempts)
    return set(numbers)


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
    """Put a dead (or failed) delivery back in the queue by hand, with a fresh budget of tries and of time."""
    result = await session.execute(
        update(DeliveryRow)
        .where(DeliveryRow.id == delivery_id, DeliveryRow.status.in_((DeliveryStatus.dead, DeliveryStatus.failed)))
        .values(
            status=DeliveryStatus.pending,
            attempts=0,
            counted_failures=0,
            failing_since=None,
            next_attempt_at=now,
            updated_at=now,
            last_error=None,
        )
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


async def latest_sent_notifies(
    *,
    session: AsyncSession,
    channels: Sequence[str],
    approval_id: str | None,
    alert_id: str | None,
    limit: int = 50,
) -> list[DeliveryRow]:
    """The sent notify deliveries on these channels about the approval (else the alert), newest first."""
    query = select(DeliveryRow).where(
        DeliveryRow.channel.in_(channels),
        DeliveryRow.status == DeliveryStatus.sent,
        DeliveryRow.purpose == DeliveryPurpose.notify,
    )
    query = (
        query.where(DeliveryRow.approval_id == approval_id)
        if approval_id
        else query.where(DeliveryRow.alert_id == alert_id)
    )
    return list((await session.execute(query.order_by(DeliveryRow.created_at.desc()).limit(limit))).scalars())


async def count_dead(*, session: AsyncSession) -> dict[str, int]:
    """Dead deliveries counted by channel, for the dead-letter gauge.

    Only the dead rows are read, through the status index: counting every status meant reading every delivery
    ever made, every time the gauge was refreshed.
    """
    table = table_of(DeliveryRow)
    rows = await session.execute(
        select(table.c.channel, func.count()).where(table.c.status == DeliveryStatus.dead).group_by(table.c.channel)
    )
    return {channel: count for channel, count in rows.all()}


async def oldest_failing(*, session: AsyncSession) -> dict[str, datetime]:
    """Per channel, when its longest-failing delivery that is still being retried began failing (for the gauge).

    Read through the status index: failing rows are few, whatever the history.
    """
    table = table_of(DeliveryRow)
    rows = await session.execute(
        select(table.c.channel, func.min(table.c.failing_since))
        .where(
            table.c.status.in_((DeliveryStatus.failed, DeliveryStatus.sending, DeliveryStatus.pending)),
            table.c.failing_since.is_not(None),
        )
        .group_by(table.c.channel)
    )
    return {channel: since for channel, since in rows.all()}
