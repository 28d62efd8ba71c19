"""The audit log's storage: hash-chained appends serialized by one head row, filtered reads, and a chain walk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Integer, Table, Text, bindparam, func, insert, select
from sqlalchemy import cast as sql_cast
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from core.store.db import Database, direct_of
from core.store.pg_direct import Statement
from core.store.tables import AuditHeadRow, AuditPendingRow, AuditRow

GENESIS_HASH = "0" * 64
_HEAD_ID = 1
# Keys whose values never belong in an audit row, whatever a caller passes.
_SECRET_KEYS = frozenset({"token", "secret", "password", "csrf", "material", "authorization", "nonce"})


def _scrub(data: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key.lower() in _SECRET_KEYS:
            continue
        clean[key] = _scrub(value) if isinstance(value, dict) else value
    return clean


@dataclass(frozen=True, slots=True)
class _Appended:
    # A row about to be appended, for its canonical JSON: an ORM instance would be built for nothing else.
    seq: int
    at: datetime
    tenant: str | None
    type: str
    approval_id: str | None
    alert_id: str | None
    actor: str | None
    actor_platform: str | None
    data: Any


def canonical_json(row: AuditRow | _Appended) -> str:
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


def row_hash(prev_hash: str, row: AuditRow | _Appended) -> str:
    """sha256(prev_hash + canonical JSON of the row), hex."""
    return hashlib.sha256((prev_hash + canonical_json(row)).encode("utf-8")).hexdigest()


_AUDIT = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)
_PENDING = cast(Table, AuditPendingRow.__table__)
# The columns the appender fills from its parameters; seq, prev_hash and hash come from the head row.
_GIVEN = ("at", "tenant", "type", "approval_id", "alert_id", "actor", "actor_platform", "data")
# SQLite has no sha256: the SQLite driver registers this function on every connection (core/store/sqlite_driver.py).
SQLITE_SHA256 = "ackbot_sha256"


def _appender(postgres: bool) -> Any:
    """The statement that appends a row, given its columns and its canonical JSON around the seq.

    On PostgreSQL it inserts into audit_pending, and the database chains the row when the transaction commits
    (migration 0002): seq from the head, hash = sha256(prev hash + the JSON with the seq put in). On SQLite (one
    writer at a time already) the insert reads the head and computes the hash itself, and a trigger moves the
    head; it returns the seq, or no row when there is no head yet.
    """
    given = [bindparam(name, type_=_AUDIT.c[name].type) for name in _GIVEN]
    before, after = bindparam("before_seq", type_=Text()), bindparam("after_seq", type_=Text())
    if postgres:
        return insert(_PENDING).values(
            {**dict(zip(_GIVEN, given, strict=True)), "before_seq": before, "after_seq": after}
        )
    seq = _HEAD.c.seq + 1
    digest = getattr(func, SQLITE_SHA256)(_HEAD.c.hash + before + sql_cast(seq, Text) + after)
    return (
        insert(_AUDIT)
        .from_select(
            ["seq", *_GIVEN, "prev_hash", "hash"],
            select(seq, *given, _HEAD.c.hash, digest).where(_HEAD.c.id == _HEAD_ID),
        )
        .returning(_AUDIT.c.seq)
    )


_APPEND = {True: _appender(True), False: _appender(False)}
# The append sent by the driver itself (see pg_direct.Statement).
_DIRECT_APPEND = {postgres: Statement(statement) for postgres, statement in _APPEND.items()}
_SEQ_MARK = -1


def append_params(
    *,
    type: str,
    at: datetime,
    tenant: str | None = None,
    approval_id: str | None = None,
    alert_id: str | None = None,
    actor: str | None = None,
    actor_platform: str | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters of the statement that appends this row: its columns and its canonical JSON around the seq.

    The data loses every key that could hold a secret (_SECRET_KEYS), at any depth."""
    # Round-trip the data through JSON now, so the hash is computed over exactly what the database returns.
    stored = json.loads(json.dumps(_scrub(data or {}), default=str))
    row = _Appended(
        seq=_SEQ_MARK,
        at=at,
        tenant=tenant,
        type=type,
        approval_id=approval_id,
        alert_id=alert_id,
        actor=actor,
        actor_platform=actor_platform,
        data=stored,
    )
    # The canonical JSON around the seq: keys are sorted, so the top-level seq is the last one, before "tenant".
    before, mark, after = canonical_json(row).rpartition(f'"seq":{_SEQ_MARK},')
    if not mark:
        raise AssertionError("the canonical JSON of an audit row has no top-level seq")
    params = {name: getattr(row, name) for name in _GIVEN}
    params.update(before_seq=before + '"seq":', after_seq="," + after)
    return params


def pending_append(*, prefix: str, when: Any) -> Any:
    """PostgreSQL: the INSERT into audit_pending of append_params (named prefix + name), made only `when` holds
    (a SQL condition), for a statement that writes more than the audit row (a CTE of it)."""
    names = [*_GIVEN, "before_seq", "after_seq"]
    types = {**{name: _AUDIT.c[name].type for name in _GIVEN}, "before_seq": Text(), "after_seq": Text()}
    values = select(*(bindparam(prefix + name, type_=types[name]) for name in names)).where(when)
    return insert(_PENDING).from_select(names, values)


def pending_from_json(*, name: str, when: Any) -> Any:
    """PostgreSQL: the INSERT into audit_pending of several rows (pending_json), given as one JSON array parameter
    `name`, in their order, made only when `when` holds (a SQL condition): a CTE of a statement that writes more."""
    names = [*_GIVEN, "before_seq", "after_seq"]
    types = {**{name: _AUDIT.c[name].type for name in _GIVEN}, "before_seq": Text(), "after_seq": Text()}
    rows = (
        func.jsonb_to_recordset(bindparam(name, type_=postgresql.JSONB()))
        .table_valued(*(sql_column(key, types[key]) for key in names), sql_column("ord", Integer()))
        .render_derived(name="new_audit", with_types=True)
    )
    chosen = select(*(rows.c[key] for key in names)).where(when).order_by(rows.c.ord)
    return insert(_PENDING).from_select(names, chosen)


def pending_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows' append_params as pending_from_json takes them: times as ISO 8601 text, each with its place."""
    return [
        {**{key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}, "ord": i}
        for i, row in enumerate(rows)
    ]


async def append(*, session: AsyncSession, db: Database, params: dict[str, Any]) -> None:
    """Append one row (append_params) inside the caller's transaction; it is chained to the last one when the
    transaction commits.

    PostgreSQL: one INSERT into audit_pending, chained by the database at commit, so concurrent appends wait for
    the head only while another commit runs. SQLite: one INSERT that reads the head, which a trigger moves;
    BEGIN IMMEDIATE already makes writers take turns. Either way the chain never forks, and a transaction that
    rolls back leaves no row and no gap.
    """
    direct = await direct_of(session)
    if db.is_postgres:
        await _DIRECT_APPEND[True].fetch(direct, params)
        return
    if not await _DIRECT_APPEND[False].fetch(direct, params):
        # The first append ever: create the head, then append (a trigger moves the head with every row).
        await session.execute(insert(_HEAD).values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH))
        if not await _DIRECT_APPEND[False].fetch(direct, params):
            raise AssertionError("the audit head was not found right after it was made")


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
        async with db.read() as session:
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
