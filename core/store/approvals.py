"""The approvals store, the only SQL of approvals: rows in, snapshots out, and a decision's plan applied once.

`decide` reads an approval as a snapshot, asks the caller for a plan (core/approvals/machine.py), and writes the
plan only on the version it read, spending the token's nonce with it: all of the plan, or nothing. How is this
module's business alone:

- SQLite: one write transaction (writers take turns, BEGIN IMMEDIATE), the read inside it; nothing can race.
- PostgreSQL: one read without a lock, then one statement that writes everything only if the version is still
  the one read and the nonce unspent. A lost race reads and plans again, up to RACE_RETRIES times, and then one
  last attempt takes the approval's row lock first, so it cannot lose.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from sqlalchemy import String, any_, bindparam, delete, exists, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.approvals.plans import Plan, Shown, Snapshot
from core.models.approvals import Approval, ApprovalState
from core.models.deliveries import DeliveryPurpose, DeliveryStatus
from core.store import audit as audit_store
from core.store import deliveries as delivery_store
from core.store.db import Database, direct_of
from core.store.pagination import decode_cursor
from core.store.pg_direct import Direct, Statement, json_values
from core.store.tables import ApprovalRow, ApprovalVoteRow, DeliveryRow, SpentNonceRow, table_of

# An approval as stored: a new ORM row, or a row read with a Core statement (same attribute names).
ApprovalRecord: TypeAlias = ApprovalRow | Row[Any]

OPEN_STATES = (ApprovalState.pending.value, ApprovalState.escalated.value)
# How often PostgreSQL reads and plans again after a lost race before it takes the row lock.
RACE_RETRIES = 3
_INTERNAL = ("event_id", "created_by", "created_audited", "updated_at", "next_due_at", "version")
_APPROVALS = table_of(ApprovalRow)
_VOTES = table_of(ApprovalVoteRow)
_DELIVERIES = table_of(DeliveryRow)
_NONCES = table_of(SpentNonceRow)
_PUBLIC = tuple(column.key for column in _APPROVALS.columns if column.key not in _INTERNAL)
_VOTE_KEYS = ("approval_id", "person", "choice", "actor_platform", "actor_id", "channel", "created_at")
_NONCE_KEYS = ("nonce", "approval_id", "spent_at", "expires_at")

# The statements of a decision, built once and sent by the driver (pg_direct.Statement).
_GET_ROW = select(_APPROVALS).where(_APPROVALS.c.id == bindparam("approval_id"))
_DIRECT_GET_ROW = Statement(_GET_ROW)
_VOTE_COLUMNS = (_VOTES.c.person, _VOTES.c.choice, _VOTES.c.actor_platform, _VOTES.c.channel, _VOTES.c.created_at)
_DIRECT_VOTES = Statement(
    select(*_VOTE_COLUMNS).where(_VOTES.c.approval_id == bindparam("approval_id")).order_by(_VOTES.c.id)
)
# An approval's own messages (not a rule's follow-ups, told apart in Python by their extra).
_NOTIFIED_COLUMNS = (
    _DELIVERIES.c.channel,
    _DELIVERIES.c.target,
    _DELIVERIES.c.extra,
    _DELIVERIES.c.status,
    _DELIVERIES.c.message_ref,
)
_NOTIFIED_WHERE = (
    _DELIVERIES.c.approval_id == bindparam("approval_id"),
    _DELIVERIES.c.purpose == DeliveryPurpose.notify,
)
_DIRECT_NOTIFIED = Statement(select(*_NOTIFIED_COLUMNS).where(*_NOTIFIED_WHERE).order_by(_DELIVERIES.c.created_at))
_NONCE = bindparam("nonce", type_=_NONCES.c.nonce.type)
_SPENT = exists(select(_NONCES.c.nonce).where(_NONCES.c.nonce == _NONCE))
_DIRECT_SPENT = Statement(select(_SPENT.label("spent")))
# An approval and whether a nonce is spent (SQLite, and PostgreSQL's locked attempt: statements cost no round trip
# on the one, and the other is rare).
_READ = select(_APPROVALS, _SPENT.label("spent")).where(_APPROVALS.c.id == bindparam("approval_id"))
_DIRECT_READ = Statement(_READ)
_DIRECT_READ_LOCKED = Statement(_READ.with_for_update(of=_APPROVALS))
_DIRECT_GET_ROWS = {
    # = ANY(array) rather than IN (...), whose SQL would depend on the number of ids; SQLite: one JSON array.
    True: Statement(
        select(_APPROVALS).where(_APPROVALS.c.id == any_(bindparam("approval_ids", type_=postgresql.ARRAY(String()))))
    ),
    False: Statement(select(_APPROVALS).where(_APPROVALS.c.id.in_(json_values("approval_ids")))),
}
_DIRECT_INSERT_VOTE = Statement(insert(_VOTES), keys=_VOTE_KEYS)
_DIRECT_INSERT_NONCE = Statement(insert(_NONCES), keys=_NONCE_KEYS)


def _read_at_once_statement() -> Any:
    """PostgreSQL: an approval with its messages, its votes and whether a nonce is spent, in one statement."""

    def as_json(columns: Sequence[Any], where: Sequence[Any], order: Any) -> Any:
        aggregated = func.json_agg(aggregate_order_by(func.json_build_array(*columns), order))
        return select(func.coalesce(aggregated, literal_column("'[]'::json"))).where(*where).scalar_subquery()

    notified = as_json(_NOTIFIED_COLUMNS, _NOTIFIED_WHERE, _DELIVERIES.c.created_at)
    votes = as_json(_VOTE_COLUMNS, (_VOTES.c.approval_id == bindparam("approval_id"),), _VOTES.c.id)
    return select(_APPROVALS, notified.label("notified"), votes.label("votes"), _SPENT.label("spent")).where(
        _APPROVALS.c.id == bindparam("approval_id")
    )


_DIRECT_READ_AT_ONCE = Statement(_read_at_once_statement())
# Conditional writes, by the columns they set (and, at once, whether they spend a nonce and record a vote).
_MOVES: dict[tuple[str, ...], Statement] = {}
_AT_ONCE: dict[tuple[tuple[str, ...], bool, bool], Statement] = {}


@dataclass(frozen=True)
class Applied:
    """A plan, written (or a plan with nothing to write), and the ids of the deliveries it queued, in order."""

    plan: Plan
    delivery_ids: tuple[str, ...] = ()


# ---------------------------------------------------------------- rows and snapshots


def approval_from_row(row: ApprovalRecord) -> Approval:
    """The stored approval as a domain model (bookkeeping columns left out)."""
    if isinstance(row, Row | tuple):
        columns = row._asdict()
        return Approval.model_validate({key: columns[key] for key in _PUBLIC})
    return Approval.model_validate({key: getattr(row, key) for key in _PUBLIC})


def _snapshot(
    row: Any, notified: Iterable[Sequence[Any]], votes: Iterable[Sequence[Any]], nonce_spent: bool
) -> Snapshot:
    shown: dict[tuple[str, str | None], tuple[str | None, dict[str, Any] | None]] = {}
    conversations: set[tuple[str, str | None]] = set()
    for channel, target, extra, status, ref in notified:
        if (extra or {}).get("follow_up"):
            continue
        key = (channel, target)
        conversations.add(key)
        # Messages sent, or being sent right now; ones still queued render the new state when they go out.
        if status not in (DeliveryStatus.sent, DeliveryStatus.sending):
            continue
        person, first_ref = shown.get(key, ((extra or {}).get("person"), None))
        if first_ref is None and status == DeliveryStatus.sent and ref:
            first_ref = dict(ref)
        shown[key] = (person, first_ref)
    return Snapshot(
        approval=approval_from_row(row),
        version=row.version,
        event_id=row.event_id,
        created_by=row.created_by,
        created_audited=row.created_audited,
        next_due_at=row.next_due_at,
        votes=tuple(
            {"person": person, "choice": choice, "platform": platform, "channel": channel, "at": _iso(at)}
            for person, choice, platform, channel, at in votes
        ),
        shown=tuple(Shown(channel, target, person, ref) for (channel, target), (person, ref) in shown.items()),
        notified=frozenset(conversations),
        nonce_spent=nonce_spent,
    )


def _iso(moment: datetime | str) -> str:
    # A vote's time as the API shows it, whether read as a column or inside a JSON aggregate (PostgreSQL's text).
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).isoformat()


async def _load(direct: Direct, approval_id: str, nonce: str | None, *, lock: bool = False) -> Snapshot | None:
    params = {"approval_id": approval_id, "nonce": nonce}
    row = await _first(_DIRECT_READ_LOCKED if lock else _DIRECT_READ, direct, params)
    if row is None:
        return None
    notified = await _DIRECT_NOTIFIED.fetch(direct, params)
    # An open approval with a quorum of one has no votes: the vote that reaches the quorum decides with it.
    open_ = row.state in OPEN_STATES
    votes = await _DIRECT_VOTES.fetch(direct, params) if row.quorum > 1 or not open_ else []
    return _snapshot(row, notified, votes, bool(nonce) and row.spent)


async def _first(statement: Statement, direct: Direct, params: dict[str, Any]) -> Any:
    rows = await statement.fetch(direct, params)
    return rows[0] if rows else None


# ---------------------------------------------------------------- deciding


async def decide(
    *,
    db: Database,
    approval_id: str | None,
    nonce: str | None,
    now: datetime,
    plan: Callable[[Snapshot | None], Plan | None],
) -> Applied | None:
    """Read the approval, plan (plan(None): no such approval) and write the plan exactly once; None: no plan."""
    if db.is_postgres:
        for _ in range(RACE_RETRIES):
            async with db.read() as session:
                snapshot = await _read_at_once(await direct_of(session), approval_id, nonce)
            planned = plan(snapshot)
            if planned is None or not planned.writes:
                return Applied(planned) if planned is not None else None
            rows = _delivery_rows(snapshot, planned, now)
            if planned.version is None:
                # A refusal's audit rows: nothing on the approval to race for.
                async with db.transaction() as session:
                    await _write(session, db, planned, rows, now)
                return Applied(planned)
            try:
                if await _write_at_once(db, planned, rows, now):
                    return Applied(planned, tuple(row["id"] for row in rows))
            except IntegrityError:
                pass  # a nonce or vote written meanwhile, by a transaction this read did not see: read again
    async with db.transaction() as session:
        direct = await direct_of(session)
        snapshot = await _load(direct, approval_id, nonce, lock=True) if approval_id else None
        planned = plan(snapshot)
        if planned is None:
            return None
        rows = _delivery_rows(snapshot, planned, now)
        if planned.writes and not await _write(session, db, planned, rows, now):
            raise AssertionError("an approval changed under its row lock")
        return Applied(planned, tuple(row["id"] for row in rows))


async def _read_at_once(direct: Direct, approval_id: str | None, nonce: str | None) -> Snapshot | None:
    if approval_id is None:
        return None
    row = await _first(_DIRECT_READ_AT_ONCE, direct, {"approval_id": approval_id, "nonce": nonce})
    return _snapshot(row, row.notified, row.votes, bool(nonce) and row.spent) if row is not None else None


def _delivery_rows(snapshot: Snapshot | None, plan: Plan, now: datetime) -> list[dict[str, Any]]:
    if snapshot is None:
        return []
    approval = snapshot.approval
    rows = []
    for queued in plan.deliveries:
        values = delivery_store.delivery_values(
            tenant=approval.tenant,
            channel=queued.channel,
            idempotency_key=queued.key,
            now=now,
            purpose=queued.purpose,
            event_id=snapshot.event_id,
            alert_id=approval.alert_id,
            approval_id=approval.id,
            rule=queued.rule,
            action_index=queued.action_index,
            target=queued.target,
            extra=dict(queued.extra) if queued.extra is not None else None,
        )
        if queued.held_by is not None and queued.held_until is not None:
            values = delivery_store.claimed_values(values, worker=queued.held_by, lease_until=queued.held_until)
        rows.append(values)
    return rows


def _move_params(plan: Plan) -> dict[str, Any]:
    params = {f"v_{key}": value for key, value in plan.values.items()}
    params.update(w_id=plan.approval_id, w_version=plan.version)
    return params


def _move(keys: tuple[str, ...], *, unspent: bool = False) -> Any:
    """UPDATE approvals SET keys..., version = version + 1 WHERE id and version are as read [and the nonce unspent]."""
    conditions = [_APPROVALS.c.id == bindparam("w_id"), _APPROVALS.c.version == bindparam("w_version")]
    if unspent:
        conditions.append(~_SPENT)
    values: dict[Any, Any] = {key: bindparam(f"v_{key}", type_=_APPROVALS.c[key].type) for key in keys}
    values["version"] = _APPROVALS.c.version + 1
    return update(_APPROVALS).where(*conditions).values(values).returning(_APPROVALS.c.id)


async def _write(session: AsyncSession, db: Database, plan: Plan, rows: list[dict[str, Any]], now: datetime) -> bool:
    """Write a plan inside the caller's transaction, statement by statement; False if the version moved on."""
    direct = await direct_of(session)
    if plan.version is not None:
        keys = tuple(sorted(plan.values))
        statement = _MOVES.get(keys)
        if statement is None:
            statement = _MOVES[keys] = Statement(_move(keys))
        if not await statement.fetch(direct, _move_params(plan)):
            return False
    if plan.nonce is not None and plan.approval_id is not None:
        await _DIRECT_INSERT_NONCE.executemany(direct, [_nonce_values(plan, now)])
    if plan.vote is not None:
        await _DIRECT_INSERT_VOTE.executemany(direct, [dict(plan.vote)])
    await delivery_store.insert_many(session=session, rows=rows)
    for note in plan.audit:
        await audit_store.append(session=session, db=db, params=audit_store.append_params(**note))
    return True


def _nonce_values(plan: Plan, now: datetime) -> dict[str, Any]:
    assert plan.nonce is not None
    return {
        "nonce": plan.nonce.nonce,
        "approval_id": plan.approval_id,
        "spent_at": now,
        "expires_at": plan.nonce.expires_at,
    }


async def _write_at_once(db: Database, plan: Plan, rows: list[dict[str, Any]], now: datetime) -> bool:
    """PostgreSQL: the whole plan in one statement, a transaction of its own; False (nothing written) if the
    approval's version moved on or the nonce was spent since the read."""
    keys = tuple(sorted(plan.values))
    shape = (keys, plan.nonce is not None, plan.vote is not None)
    statement = _AT_ONCE.get(shape)
    if statement is None:
        statement = _AT_ONCE[shape] = Statement(_at_once(*shape))
    params = _move_params(plan)
    params["deliveries"] = delivery_store.json_rows(rows)
    params["audit"] = audit_store.pending_json([audit_store.append_params(**note) for note in plan.audit])
    if plan.nonce is not None:
        params.update(nonce=plan.nonce.nonce, spent_at=now, expires_at=plan.nonce.expires_at)
    if plan.vote is not None:
        params.update({f"vote_{key}": plan.vote[key] for key in _VOTE_KEYS[1:]})
    async with db.transaction(autocommit=True) as session:
        return bool(await statement.fetch(await direct_of(session), params))


def _at_once(keys: tuple[str, ...], spend: bool, vote: bool) -> Any:
    # Every write is conditional on the move, so the statement does all of it or nothing. A concurrent write
    # holds the row: this one waits for it, then finds the version moved on and moves nothing. No ON CONFLICT on
    # the nonce: one spent by a transaction this statement did not see fails it whole (IntegrityError).
    moved = _move(keys, unspent=spend).cte("moved")
    applied = exists(select(moved.c.id))
    writes = [
        delivery_store.insert_from_json(name="deliveries", when=applied).cte("queued"),
        audit_store.pending_from_json(name="audit", when=applied).cte("audited"),
    ]
    if spend:
        spent = select(
            _NONCE,
            moved.c.id,
            bindparam("spent_at", type_=_NONCES.c.spent_at.type),
            bindparam("expires_at", type_=_NONCES.c.expires_at.type),
        )
        writes.append(insert(_NONCES).from_select(list(_NONCE_KEYS), spent).cte("spent"))
    if vote:
        voted = select(moved.c.id, *(bindparam(f"vote_{key}", type_=_VOTES.c[key].type) for key in _VOTE_KEYS[1:]))
        writes.append(insert(_VOTES).from_select(list(_VOTE_KEYS), voted).cte("voted"))
    return select(moved.c.id).add_cte(*writes)


# ---------------------------------------------------------------- opening and reading


async def add(*, session: AsyncSession, row: ApprovalRow) -> None:
    """Add a new approval to the caller's transaction (written before anything that refers to it)."""
    session.add(row)
    await session.flush()


async def get_row(*, session: AsyncSession | Direct, approval_id: str) -> Row[Any] | None:
    """One approval row."""
    return await _first(_DIRECT_GET_ROW, await direct_of(session), {"approval_id": approval_id})  # type: ignore[no-any-return]


async def get_rows(*, session: AsyncSession, approval_ids: Iterable[str]) -> list[Row[Any]]:
    """The approval rows of these ids that exist, in one query."""
    direct = await direct_of(session)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        return await _DIRECT_GET_ROWS[True].fetch(direct, {"approval_ids": list(approval_ids)})
    ids = json.dumps(list(approval_ids))
    return await _DIRECT_GET_ROWS[False].fetch(direct, {"approval_ids": ids})


async def get(*, session: AsyncSession | Direct, approval_id: str) -> Approval | None:
    """One approval by id."""
    row = await get_row(session=session, approval_id=approval_id)
    return approval_from_row(row) if row is not None else None


async def snapshot(*, session: AsyncSession | Direct, approval_id: str, nonce: str | None = None) -> Snapshot | None:
    """An approval as a decision would read it, without deciding (the web page's preview, the API's view)."""
    return await _load(await direct_of(session), approval_id, nonce)


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


async def final_ids(*, session: AsyncSession, approval_ids: list[str]) -> list[str]:
    """Which of these approvals are final (decided, expired or cancelled)."""
    query = select(_APPROVALS.c.id).where(_APPROVALS.c.id.in_(approval_ids), _APPROVALS.c.state.not_in(OPEN_STATES))
    return list((await session.execute(query)).scalars())


async def due_ids(*, session: AsyncSession, now: datetime, limit: int) -> list[str]:
    """Open approvals whose next step (escalation or expiry) is due, soonest first."""
    query = (
        select(_APPROVALS.c.id)
        .where(_APPROVALS.c.state.in_(OPEN_STATES), _APPROVALS.c.next_due_at <= now)
        .order_by(_APPROVALS.c.next_due_at)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def take_unaudited(*, session: AsyncSession, db: Database, limit: int = 100) -> list[Row[Any]]:
    """Mark up to `limit` approvals whose creation is not audited yet as audited, and return them (exactly once
    each: the version moves on, so a decision planned on the old one reads again). PostgreSQL skips rows another
    replica holds."""
    query = select(_APPROVALS.c.id).where(_APPROVALS.c.created_audited.is_(False)).order_by(_APPROVALS.c.id)
    if db.is_postgres:
        query = query.with_for_update(skip_locked=True)
    ids = list((await session.execute(query.limit(limit))).scalars())
    if not ids:
        return []
    statement = (
        update(_APPROVALS)
        .where(_APPROVALS.c.id.in_(ids), _APPROVALS.c.created_audited.is_(False))
        .values(created_audited=True, version=_APPROVALS.c.version + 1)
        .returning(*_APPROVALS.c)
    )
    return list((await session.execute(statement)).all())


async def votes(*, session: AsyncSession | Direct, approval_id: str) -> list[dict[str, Any]]:
    """Every vote on an approval, oldest first, as JSON-ready dicts."""
    rows = await _DIRECT_VOTES.fetch(await direct_of(session), {"approval_id": approval_id})
    return [
        {"person": person, "choice": choice, "platform": platform, "channel": channel, "at": _iso(at)}
        for person, choice, platform, channel, at in rows
    ]


# ---------------------------------------------------------------- spent nonces


async def is_spent(*, session: AsyncSession | Direct, nonce: str) -> bool:
    """Whether a token's nonce was spent already (for verify, which must not spend it)."""
    return bool((await _DIRECT_SPENT.fetch(await direct_of(session), {"nonce": nonce}))[0].spent)


async def prune_nonces(*, db: Database, before: datetime) -> int:
    """Forget nonces of tokens that expired before `before`: such a token is refused as expired anyway."""
    async with db.transaction(autocommit=True) as session:
        result = await session.execute(delete(_NONCES).where(_NONCES.c.expires_at < before))
        return int(getattr(result, "rowcount", 0) or 0)
