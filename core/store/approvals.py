"""Approvals, their votes and the deliveries that showed them: rows in, domain models out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias, cast

from sqlalchemy import String, any_, bindparam, exists, func, insert, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Approval, ApprovalState, DeliveryPurpose, DeliveryStatus
from core.store import audit as audit_store
from core.store import deliveries as delivery_store
from core.store import nonces as nonce_store
from core.store.db import Database, direct_of
from core.store.pagination import decode_cursor
from core.store.pg_direct import Direct, Statement, json_values
from core.store.tables import ApprovalRow, ApprovalVoteRow, DeliveryRow, SpentNonceRow, table_of

# An approval as stored: a new ORM row, or a row read with a Core statement (same attribute names). Reads and
# conditional updates return Core rows: no ORM identity map or instance state for rows nothing modifies in place,
# which made each of them cost several times what its SQL did.
ApprovalRecord: TypeAlias = ApprovalRow | Row[Any]

OPEN_STATES = (ApprovalState.pending.value, ApprovalState.escalated.value)
_INTERNAL = ("event_id", "created_by", "created_audited", "updated_at", "next_due_at")
_APPROVALS = table_of(ApprovalRow)
_VOTES = table_of(ApprovalVoteRow)
_DELIVERIES = table_of(DeliveryRow)
_COLUMNS = tuple(column.key for column in _APPROVALS.columns)
_PUBLIC = tuple(key for key in _COLUMNS if key not in _INTERNAL)
_NONCES = table_of(SpentNonceRow)

# The statements of a decision, built once: a click then spends no time composing SQL, only executing it.
_GET_ROW = select(_APPROVALS).where(_APPROVALS.c.id == bindparam("approval_id"))
_GET_ROW_LOCKED = _GET_ROW.with_for_update()
_VOTE = {
    postgres: (postgresql.insert(_VOTES) if postgres else sqlite.insert(_VOTES)).on_conflict_do_nothing(
        index_elements=[_VOTES.c.approval_id, _VOTES.c.person]
    )
    for postgres in (True, False)
}
_LIST_VOTES = select(_VOTES).where(_VOTES.c.approval_id == bindparam("approval_id")).order_by(_VOTES.c.id)
_SHOWN_COLUMNS = (
    _DELIVERIES.c.channel,
    _DELIVERIES.c.target,
    _DELIVERIES.c.extra,
    _DELIVERIES.c.status,
    _DELIVERIES.c.message_ref,
)
_SHOWN_WHERE = (
    _DELIVERIES.c.approval_id == bindparam("approval_id"),
    _DELIVERIES.c.purpose == DeliveryPurpose.notify,
    # Not IN (...): a literal list is rendered per execution, which pg_direct.Statement does not do.
    or_(_DELIVERIES.c.status == DeliveryStatus.sent, _DELIVERIES.c.status == DeliveryStatus.sending),
)
_SHOWN_ON = select(*_SHOWN_COLUMNS).where(*_SHOWN_WHERE).order_by(_DELIVERIES.c.created_at)
# Conditional moves, one statement per shape (which columns change, and which conditions apply).
_TRANSITIONS: dict[tuple[tuple[str, ...], bool, bool, bool], Any] = {}
_VOTE_KEYS = ("approval_id", "person", "choice", "actor_platform", "actor_id", "channel", "created_at")
# The same statements sent by the driver itself (see pg_direct.Statement): on PostgreSQL about a third of
# SQLAlchemy's CPU per statement, on the path of every click; on SQLite the statement runs at once.
_DIRECT_GET_ROW = Statement(_GET_ROW)
_DIRECT_GET_ROW_LOCKED = Statement(_GET_ROW_LOCKED)
_DIRECT_LIST_VOTES = Statement(_LIST_VOTES)
# = ANY(array) rather than IN (...), whose SQL would depend on the number of ids.
_DIRECT_GET_ROWS = {
    True: Statement(
        select(_APPROVALS).where(_APPROVALS.c.id == any_(bindparam("approval_ids", type_=postgresql.ARRAY(String()))))
    ),
    # SQLite: the ids as one JSON array.
    False: Statement(select(_APPROVALS).where(_APPROVALS.c.id.in_(json_values("approval_ids")))),
}
_DIRECT_VOTE = {
    postgres: Statement(_VOTE[postgres].returning(_VOTES.c.id), keys=_VOTE_KEYS) for postgres in (True, False)
}
_DIRECT_SHOWN_ON = Statement(_SHOWN_ON)
_DIRECT_TRANSITIONS: dict[tuple[tuple[str, ...], bool, bool, bool], Statement] = {}


def _lock_and_spend_statement() -> Any:
    # The approval is locked first (the insert reads the locked row), so two clicks with one nonce queue on the
    # approval's lock as any two clicks do, and the second finds the nonce spent when the first commits.
    locked = _GET_ROW_LOCKED.cte("locked")
    spend = select(
        bindparam("nonce", type_=_NONCES.c.nonce.type),
        locked.c.id,
        bindparam("spent_at", type_=_NONCES.c.spent_at.type),
        bindparam("expires_at", type_=_NONCES.c.expires_at.type),
    )
    spent = (
        postgresql.insert(_NONCES)
        .from_select(["nonce", "approval_id", "spent_at", "expires_at"], spend)
        .on_conflict_do_nothing(index_elements=[_NONCES.c.nonce])
        .returning(_NONCES.c.nonce)
        .cte("spent")
    )
    return select(locked, exists(select(spent.c.nonce)).label(NONCE_SPENT))


NONCE_SPENT = "nonce_spent"
_DIRECT_LOCK_AND_SPEND = Statement(_lock_and_spend_statement())


def approval_from_row(row: ApprovalRecord) -> Approval:
    """The stored approval as a domain model (bookkeeping columns left out)."""
    # A Core row or a pg_direct row (a named tuple) by its columns; an ORM row by its attributes.
    if isinstance(row, Row | tuple):
        columns = row._asdict()
        data = {key: columns[key] for key in _PUBLIC}
    else:
        data = {key: getattr(row, key) for key in _PUBLIC}
    return Approval.model_validate(data)


async def get_row(*, session: AsyncSession | Direct, approval_id: str, lock: bool = False) -> Row[Any] | None:
    """One approval row; lock=True holds its row lock to the end of the transaction (PostgreSQL).

    On SQLite every write transaction already holds the database lock (BEGIN IMMEDIATE), so no more is needed.
    """
    # SQLite's compiler leaves FOR UPDATE out.
    statement = _DIRECT_GET_ROW_LOCKED if lock else _DIRECT_GET_ROW
    rows = await statement.fetch(await direct_of(session), {"approval_id": approval_id})
    return rows[0] if rows else None


async def lock_and_spend(
    *, session: AsyncSession, db: Database, approval_id: str, nonce: str, now: datetime, expires_at: datetime
) -> tuple[Row[Any] | None, bool]:
    """Lock an approval for this transaction and spend a token's nonce on it: the row (None if there is no such
    approval, and then nothing is spent), and whether the nonce was spent now (False: a replay).

    On PostgreSQL one statement, one round trip. A transaction that refuses the click afterwards rolls the
    spending back with everything else.
    """
    if db.is_postgres:
        params = {"approval_id": approval_id, "nonce": nonce, "spent_at": now, "expires_at": expires_at}
        rows = await _DIRECT_LOCK_AND_SPEND.fetch(await direct_of(session), params)
        return (rows[0], bool(getattr(rows[0], NONCE_SPENT))) if rows else (None, False)
    row = await get_row(session=session, approval_id=approval_id, lock=True)
    if row is None:
        return None, False
    spent = await nonce_store.spend(
        session=session, db=db, nonce=nonce, approval_id=approval_id, now=now, expires_at=expires_at
    )
    return row, spent


async def get_rows(*, session: AsyncSession, approval_ids: Iterable[str]) -> list[Row[Any]]:
    """The approval rows of these ids that exist, in one query."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        return await _DIRECT_GET_ROWS[True].fetch(await direct_of(session), {"approval_ids": list(approval_ids)})
    ids = json.dumps(list(approval_ids))
    return await _DIRECT_GET_ROWS[False].fetch(await direct_of(session), {"approval_ids": ids})


async def get(*, session: AsyncSession, approval_id: str) -> Approval | None:
    """One approval by id."""
    row = await get_row(session=session, approval_id=approval_id)
    return approval_from_row(row) if row is not None else None


async def list_approvals(
    *,
    session: AsyncSession,
    tenants: list[str] | None,
    states: Iterable[str] | None = None,
    alert_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Approval], str | None]:
    """Approvals newest first; returns the page and the last id when there is more (ValueError for a bad cursor)."""
    query = select(_APPROVALS)
    if tenants is not None:
        query = query.where(_APPROVALS.c.tenant.in_(tenants))
    if states is not None:
        query = query.where(_APPROVALS.c.state.in_(list(states)))
    if alert_id is not None:
        query = query.where(_APPROVALS.c.alert_id == alert_id)
    if cursor is not None:
        query = query.where(_APPROVALS.c.id < decode_cursor(cursor))
    rows = (await session.execute(query.order_by(_APPROVALS.c.id.desc()).limit(limit + 1))).all()
    page = [approval_from_row(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def transition(
    *,
    session: AsyncSession,
    approval_id: str,
    from_level: int | None = None,
    from_due: datetime | None = None,
    check_due: bool = False,
    values: dict[str, Any],
) -> Row[Any] | None:
    """Conditionally move an open approval: UPDATE ... WHERE state IN (pending, escalated) [AND the same step].

    Returns the updated row, or None when another transaction got there first: that is how two clicks, two
    replicas or two scheduler runs produce exactly one decision or one escalation step.
    """
    shape = (tuple(sorted(values)), from_level is not None, check_due, from_due is not None)
    statement = _TRANSITIONS.get(shape)
    if statement is None:
        state = _APPROVALS.c.state
        # Not IN (...), for pg_direct.Statement (see _SHOWN_ON); the id picks the row either way.
        conditions = [_APPROVALS.c.id == bindparam("w_id"), or_(*(state == open_state for open_state in OPEN_STATES))]
        if from_level is not None:
            conditions.append(_APPROVALS.c.escalation_level == bindparam("w_level"))
        if check_due:
            due = _APPROVALS.c.next_due_at
            conditions.append(due == bindparam("w_due", type_=due.type) if from_due is not None else due.is_(None))
        statement = _TRANSITIONS[shape] = (
            update(_APPROVALS)
            .where(*conditions)
            .values({key: bindparam(f"v_{key}", type_=_APPROVALS.c[key].type) for key in shape[0]})
            .returning(*_APPROVALS.c)
        )
    params: dict[str, Any] = {f"v_{key}": value for key, value in values.items()}
    params.update(w_id=approval_id, w_level=from_level, w_due=from_due)
    sent = _DIRECT_TRANSITIONS.get(shape)
    if sent is None:
        sent = _DIRECT_TRANSITIONS[shape] = Statement(statement)
    rows = await sent.fetch(await direct_of(session), params)
    return rows[0] if rows else None


async def final_ids(*, session: AsyncSession, approval_ids: list[str]) -> list[str]:
    """Which of these approvals are final (decided, expired or cancelled)."""
    query = select(ApprovalRow.id).where(ApprovalRow.id.in_(approval_ids), ApprovalRow.state.not_in(OPEN_STATES))
    return list((await session.execute(query)).scalars())


async def due_ids(*, session: AsyncSession, db: Database, now: datetime, limit: int) -> list[str]:
    """Open approvals whose next step (escalation or expiry) is due; PostgreSQL skips rows another replica holds."""
    query = (
        select(ApprovalRow.id)
        .where(ApprovalRow.state.in_(OPEN_STATES), ApprovalRow.next_due_at <= now)
        .order_by(ApprovalRow.next_due_at)
        .limit(limit)
    )
    if db.is_postgres:
        query = query.with_for_update(skip_locked=True)
    return list((await session.execute(query)).scalars())


async def lock_if_due(*, session: AsyncSession, db: Database, approval_id: str, now: datetime) -> Row[Any] | None:
    """Take one due approval for this transaction, or None if it is not due or another replica holds it."""
    query = select(_APPROVALS).where(
        _APPROVALS.c.id == approval_id, _APPROVALS.c.state.in_(OPEN_STATES), _APPROVALS.c.next_due_at <= now
    )
    if db.is_postgres:
        query = query.with_for_update(skip_locked=True)
    return (await session.execute(query)).first()


async def take_unaudited(
    *, session: AsyncSession, db: Database, approval_id: str | None = None, limit: int = 100
) -> list[Row[Any]]:
    """Mark approvals whose creation is not audited yet as audited, and return them (exactly once each).

    With approval_id, only that one (the caller holds its row lock); otherwise up to limit of them, skipping
    rows another replica holds.
    """
    if approval_id is not None:
        ids = [approval_id]
    else:
        query = select(ApprovalRow.id).where(ApprovalRow.created_audited.is_(False)).order_by(ApprovalRow.id)
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        ids = list((await session.execute(query.limit(limit))).scalars())
        if not ids:
            return []
    statement = (
        update(_APPROVALS)
        .where(_APPROVALS.c.id.in_(ids), _APPROVALS.c.created_audited.is_(False))
        .values(created_audited=True)
        .returning(*_APPROVALS.c)
    )
    return list((await session.execute(statement)).all())


async def add_vote(*, session: AsyncSession, db: Database, vote: dict[str, Any]) -> bool:
    """Record one person's vote (vote_values); False if this person has voted on this approval already."""
    return bool(await _DIRECT_VOTE[db.is_postgres].fetch(await direct_of(session), vote))


def vote_values(
    *,
    approval_id: str,
    person: str,
    choice: str,
    actor_platform: str,
    actor_id: str,
    channel: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The columns of one vote (for add_vote, or decide_at_once's)."""
    return {
        "approval_id": approval_id,
        "person": person,
        "choice": choice,
        "actor_platform": actor_platform,
        "actor_id": actor_id,
        "channel": channel,
        "created_at": now,
    }


async def count_votes(*, session: AsyncSession, approval_id: str, choice: str) -> int:
    """Distinct people who voted choice on an approval."""
    query = select(func.count()).where(ApprovalVoteRow.approval_id == approval_id, ApprovalVoteRow.choice == choice)
    return int((await session.execute(query)).scalar_one())


async def votes(*, session: AsyncSession | Direct, approval_id: str) -> list[dict[str, Any]]:
    """Every vote on an approval, oldest first, as JSON-ready dicts."""
    rows = await _DIRECT_LIST_VOTES.fetch(await direct_of(session), {"approval_id": approval_id})
    return [
        {
            "person": r.person,
            "choice": r.choice,
            "platform": r.actor_platform,
            "channel": r.channel,
            "at": r.created_at.isoformat(),
        }
        for r in rows
    ]


Shown: TypeAlias = list[tuple[str, str | None, dict[str, Any], dict[str, Any] | None]]


async def shown_on(*, session: AsyncSession, approval_id: str) -> Shown:
    """(channel, target, extra, message_ref) of every message that showed the approval and may need an update.

    Notify deliveries already sent, or being sent right now; ones still queued will render the new state
    when they go out, and follow-up messages (a rule's on_deny ...) are not the approval's own messages.
    message_ref is the first sent message's reference in that conversation (what the update edits), or None
    while none is known yet.
    """
    rows = await _DIRECT_SHOWN_ON.fetch(await direct_of(session), {"approval_id": approval_id})
    return _shown(rows)


def _shown(rows: Iterable[Sequence[Any]]) -> Shown:
    # rows: (channel, target, extra, status, message_ref) of _SHOWN_ON, oldest first.
    shown: dict[tuple[str, str | None], tuple[dict[str, Any], dict[str, Any] | None]] = {}
    for channel, target, extra, status, ref in rows:
        if (extra or {}).get("follow_up"):
            continue
        key = (channel, target)
        first_extra, first_ref = shown.get(key, (dict(extra or {}), None))
        if first_ref is None and status == DeliveryStatus.sent and ref:
            first_ref = dict(ref)
        shown[key] = (first_extra, first_ref)
    return [(channel, target, extra, ref) for (channel, target), (extra, ref) in shown.items()]


# ---------------------------------------------------------------- a decision at once (PostgreSQL)

# What a decision changes on the approval row (core.approvals.service: the final values).
DECISION_KEYS = ("state", "decided_at", "decided_by", "decided_choice", "decision_channel", "next_due_at", "updated_at")


def _peek_statement() -> Any:
    shown = (
        select(
            func.coalesce(
                func.json_agg(aggregate_order_by(func.json_build_array(*_SHOWN_COLUMNS), _DELIVERIES.c.created_at)),
                literal_column("'[]'::json"),
            )
        )
        .where(*_SHOWN_WHERE)
        .scalar_subquery()
    )
    spent = exists(select(_NONCES.c.nonce).where(_NONCES.c.nonce == bindparam("nonce", type_=_NONCES.c.nonce.type)))
    return select(_APPROVALS, shown.label("shown_on"), spent.label(NONCE_SPENT)).where(
        _APPROVALS.c.id == bindparam("approval_id")
    )


def _decide_statement(with_vote: bool) -> Any:
    # The move is conditional on the row being as the caller read it, and on the nonce being unspent; every other
    # write is conditional on the move, so the statement (a transaction of its own) does all of it or nothing.
    # A concurrent decision holds the row: this one waits for it, then finds the row changed and moves nothing.
    nonce = bindparam("nonce", type_=_NONCES.c.nonce.type)
    moved = (
        update(_APPROVALS)
        .where(
            _APPROVALS.c.id == bindparam("approval_id"),
            _APPROVALS.c.state == bindparam("w_state"),
            _APPROVALS.c.escalation_level == bindparam("w_level"),
            _APPROVALS.c.updated_at == bindparam("w_updated_at", type_=_APPROVALS.c.updated_at.type),
            ~exists(select(_NONCES.c.nonce).where(_NONCES.c.nonce == nonce)),
        )
        .values({key: bindparam(f"v_{key}", type_=_APPROVALS.c[key].type) for key in DECISION_KEYS})
        .returning(*_APPROVALS.c)
        .cte("moved")
    )
    applied = exists(select(moved.c.id))
    # No ON CONFLICT: a nonce spent by a transaction this statement did not see fails it whole.
    spend = select(
        nonce,
        moved.c.id,
        bindparam("spent_at", type_=_NONCES.c.spent_at.type),
        bindparam("expires_at", type_=_NONCES.c.expires_at.type),
    )
    writes = [
        insert(_NONCES).from_select(["nonce", "approval_id", "spent_at", "expires_at"], spend).cte("spent"),
        delivery_store.insert_from_json(name="deliveries", when=applied).cte("queued"),
        audit_store.pending_append(prefix="audit_", when=applied).cte("audited"),
    ]
    if with_vote:
        vote = select(moved.c.id, *(bindparam(f"vote_{key}", type_=_VOTES.c[key].type) for key in _VOTE_KEYS[1:]))
        writes.append(insert(_VOTES).from_select(list(_VOTE_KEYS), vote).cte("voted"))
    return select(moved).add_cte(*writes)


_DIRECT_PEEK = Statement(_peek_statement())
_DIRECT_DECIDE = {with_vote: Statement(_decide_statement(with_vote)) for with_vote in (True, False)}


async def peek(*, db: Database, approval_id: str, nonce: str) -> tuple[Row[Any], Shown, bool] | None:
    """PostgreSQL, one read without a lock: an approval's row, the messages that show it (shown_on) and whether a
    token's nonce is spent; None if there is no such approval."""
    rows = await db.fetch_statement(_DIRECT_PEEK, {"approval_id": approval_id, "nonce": nonce})
    if not rows:
        return None
    row = rows[0]
    return row, _shown(row.shown_on), bool(getattr(row, NONCE_SPENT))


def as_moved(seen: Row[Any], values: dict[str, Any]) -> Row[Any]:
    """The row peek() read as decide_at_once() with these values would leave it."""
    return cast(Row[Any], seen._replace(**values))  # a pg_direct row: a named tuple


async def decide_at_once(
    *,
    db: Database,
    seen: ApprovalRecord,
    values: dict[str, Any],
    nonce: str,
    spent_at: datetime,
    expires_at: datetime,
    vote: dict[str, Any] | None,
    deliveries: Sequence[dict[str, Any]],
    audit: dict[str, Any],
) -> Row[Any] | None:
    """PostgreSQL: decide an approval read by peek() in one statement: move it to `values` (DECISION_KEYS), spend
    the nonce, record the vote (vote_values), queue the deliveries (delivery_values) and
    append the audit row (audit.row_params). The moved row, or None, having changed nothing, if the approval is no
    longer as `seen` or the nonce was spent meanwhile.
    """
    params: dict[str, Any] = {
        "approval_id": seen.id,
        "w_state": seen.state,
        "w_level": seen.escalation_level,
        "w_updated_at": seen.updated_at,
        "nonce": nonce,
        "spent_at": spent_at,
        "expires_at": expires_at,
        "deliveries": delivery_store.json_rows(deliveries),
    }
    params.update({f"v_{key}": values[key] for key in DECISION_KEYS})
    params.update({f"audit_{key}": value for key, value in audit.items()})
    if vote is not None:
        params.update({f"vote_{key}": vote[key] for key in _VOTE_KEYS[1:]})
    rows = await db.fetch_statement(_DIRECT_DECIDE[vote is not None], params)
    return rows[0] if rows else None
