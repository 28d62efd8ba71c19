"""Alerts: opened, updated and resolved by events; listed and read by the API and the chat commands."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, bindparam, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.models.common import Severity
from core.models.events import Alert, AlertStatus, Event, EventStatus
from core.store.convert import alert_from_columns, alert_from_row
from core.store.db import Database, direct_of, new_id
from core.store.pagination import decode_cursor
from core.store.pg_direct import Direct, Statement
from core.store.tables import AlertRow, table_of


class Transition(StrEnum):
    opened = "opened"
    updated = "updated"
    resolved = "resolved"
    ignored = "ignored"  # a resolve for an alert that is not open


@dataclass(frozen=True)
class AlertChange:
    """What an event did to its alert; the alert's columns as they are after the event."""

    columns: dict[str, Any] | None
    transition: Transition
    event_stored: bool = False  # the event's own row was written by the statement that made the change

    @property
    def alert_id(self) -> str | None:
        return self.columns["id"] if self.columns is not None else None

    @property
    def alert(self) -> Alert | None:
        """The alert as a domain model (built on demand: most events never need it)."""
        return alert_from_columns(self.columns) if self.columns is not None else None


class AlertBook:
    """The alerts one run of events speaks of (each identity at most once, see core.ingest.rounds), written in
    bulk: a firing opens or updates its alert in one upsert, a resolve reads (on PostgreSQL locks) and closes it."""

    def __init__(self, *, conn: AsyncConnection, db: Database, direct: Direct) -> None:
        self.conn = conn
        self.db = db
        self.direct = direct  # conn's driver connection (core.store.db.direct_of), for the upsert of each run

    async def apply(self, events: Sequence[tuple[Event, str]], *, store_events: bool = False) -> list[AlertChange]:
        """Open, update or resolve the alert of each (event, fingerprint); the changes in the same order. With
        store_events on PostgreSQL, firings write their events in the same statement as their alerts, and say so in
        AlertChange.event_stored; the caller stores the others."""
        firing = [(event, fp) for event, fp in events if event.status is not EventStatus.resolved]
        resolving = [(event, fp) for event, fp in events if event.status is EventStatus.resolved]
        fired = await self._fire(firing, store_events=store_events and self.db.is_postgres)
        changes = {**fired, **await self._resolve(resolving)}
        return [changes[(event.tenant, fp)] for event, fp in events]

    async def _fire(
        self, events: Sequence[tuple[Event, str]], *, store_events: bool
    ) -> dict[tuple[str, str], AlertChange]:
        if not events:
            return {}
        ordered = sorted(events, key=lambda pair: (pair[0].tenant, pair[1]))
        rows = [_opening_row(event, fingerprint) for event, fingerprint in ordered]
        decided: Iterable[Any]  # rows by column name
        if store_events:
            decided = await self.direct.fetch(_FIRE_AND_STORE, _fire_and_store_run(ordered, rows))
        else:
            # One upsert per identity: sent by the driver, each costs less than SQLAlchemy's one multi-row statement.
            fire = _fire_statement(self.db.dialect)
            decided = [found._asdict() for row in rows for found in await fire.fetch(self.direct, row)]
        sent = {(row["tenant"], row["fingerprint"]): row for row in rows}
        changes = {}
        for stored in decided:
            key = (stored["tenant"], stored["fingerprint"])
            row = sent[key]
            # The refreshed columns are the ones just sent; the database says only what it decided.
            columns = {**row, **stored}
            transition = Transition.opened if stored["id"] == row["id"] else Transition.updated
            changes[key] = AlertChange(columns, transition, event_stored=store_events)
        return changes

    async def _resolve(self, events: Sequence[tuple[Event, str]]) -> dict[tuple[str, str], AlertChange]:
        if not events:
            return {}
        wanted = {(event.tenant, fp) for event, fp in events}
        query = _active_statement(self.db.dialect)
        params = {"tenants": sorted({t for t, _ in wanted}), "fingerprints": sorted({fp for _, fp in wanted})}
        active = {}
        for row in (await self.conn.execute(query, params)).mappings():
            if (row["tenant"], row["fingerprint"]) in wanted:
                active[(row["tenant"], row["fingerprint"])] = dict(row)
        changes = {}
        closed = []
        for event, fingerprint in events:
            columns = active.get((event.tenant, fingerprint))
            if columns is None:
                changes[(event.tenant, fingerprint)] = AlertChange(None, Transition.ignored)
                continue
            _refresh_from_event(columns, event)
            columns.update(event_count=columns["event_count"] + 1, status=AlertStatus.resolved)
            columns["resolved_at"] = event.received_at
            closed.append(columns)
            changes[(event.tenant, fingerprint)] = AlertChange(columns, Transition.resolved)
        if closed:
            rows = [{"b_id": row["id"], **{f"b_{c}": row[c] for c in _CLOSING}} for row in closed]
            await self.conn.execute(_close_statement(), rows)
        return changes


def _opening_row(event: Event, fingerprint: str) -> dict[str, Any]:
    # The alert a firing opens, if its identity has no active alert.
    row = {
        "id": new_id("alr"),
        "tenant": event.tenant,
        "fingerprint": fingerprint,
        "kind": event.kind,
        "status": AlertStatus.open,
        "first_seen": event.received_at,
        "resolved_at": None,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "event_count": 1,
    }
    _refresh_from_event(row, event)
    return row


# The statements are built once: building one costs more than running it (SQLAlchemy's coercions and cache key).
@functools.cache
def _fire_statement(dialect: str) -> Statement:
    table = table_of(AlertRow)
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    statement = (
        # The active alert of the identity, if there is one, is updated in place (and stays acknowledged if it
        # was); rows are in identity order, the order PostgreSQL locks them in, so two replicas cannot deadlock.
        insert.on_conflict_do_update(
            index_elements=[table.c.tenant, table.c.fingerprint],
            index_where=table.c.status != literal_column("'resolved'"),
            set_={"event_count": table.c.event_count + 1, **{column: insert.excluded[column] for column in _REFRESHED}},
        )
        # Not the refreshed columns: they are what was sent, and reading them back (the JSON documents above all)
        # cost more than the rest of the statement.
        .returning(*(table.c[column] for column in _DECIDED))
    )
    return Statement(statement, keys=list(_OPENING_KEYS))


@functools.cache
def _active_statement(dialect: str) -> Select[Any]:
    table = table_of(AlertRow)
    query = (
        select(table)
        .where(
            table.c.tenant.in_(bindparam("tenants", expanding=True)),
            table.c.fingerprint.in_(bindparam("fingerprints", expanding=True)),
            table.c.status != AlertStatus.resolved,
        )
        # Locked in identity order, as the upsert locks them.
        .order_by(table.c.tenant, table.c.fingerprint)
    )
    return query.with_for_update() if dialect == "postgresql" else query


@functools.cache
def _close_statement() -> Any:
    table = table_of(AlertRow)
    return update(table).where(table.c.id == bindparam("b_id")).values({c: bindparam(f"b_{c}") for c in _CLOSING})


# What every event sets on its alert (besides counting itself).
_REFRESHED = (
    "last_seen",
    "last_event_id",
    "severity",
    "severity_rank",
    "title",
    "summary",
    "scope",
    "payload",
    "links",
)


_CLOSING = (*_REFRESHED, "event_count", "status", "resolved_at")
# What the upsert leaves as the active alert had it (or, for a new alert, as sent), and the identity it is keyed by.
_DECIDED = (
    "id",
    "tenant",
    "fingerprint",
    "kind",
    "status",
    "first_seen",
    "resolved_at",
    "acknowledged_by",
    "acknowledged_at",
    "event_count",
)
# The columns of an opening row (_opening_row), as the upsert is executed with them.
_OPENING_KEYS = (*_DECIDED, *_REFRESHED)

# PostgreSQL: a run's firings upsert their alerts and store themselves in one statement, which takes the run as
# one JSON document (a row per event) whatever the number of events. Against the upsert and the INSERT of events in
# two statements, it saves a statement and a round trip per group and SQLAlchemy's work per row and per value;
# one document, not an array per column, because asyncpg checks every element of an array against abstract base
# classes, and the event's JSON documents go in as they are, written once for both rows. Rows are upserted in
# identity order, the order the two-statement upsert locks them in. The upsert is _fire_statement's:
# tests/test_store_ingest.py checks that both ways leave the same rows. It is sent by asyncpg itself, on intake's
# direct connection (core.store.pg_direct): SQLAlchemy's execution would cost more than the statement's own work.
_FIRE_AND_STORE_FIELDS = {
    "alert_id": "text",
    "event_id": "text",
    "tenant": "text",
    "fingerprint": "text",
    "kind": "text",
    "severity": "text",
    "severity_rank": "integer",
    "title": "text",
    "summary": "text",
    "scope": "jsonb",
    "payload": "jsonb",
    "links": "jsonb",
    "received_at": "timestamptz",
    "client_id": "text",
    "ts": "timestamptz",
    "status": "text",
    "dedup_key": "text",
    "source": "text",
    "ord": "integer",  # the row's place in identity order
}
_FIRE_AND_STORE = (
    "WITH incoming AS (SELECT * FROM jsonb_to_recordset(CAST($1 AS jsonb)) AS i("
    + ", ".join(f"{name} {kind}" for name, kind in _FIRE_AND_STORE_FIELDS.items())
    + ")), "
    "upserted AS ("
    "INSERT INTO alerts (id, tenant, fingerprint, kind, status, severity, severity_rank, title, summary, scope, "
    "payload, links, first_seen, last_seen, resolved_at, acknowledged_by, acknowledged_at, event_count, "
    "last_event_id) "
    "SELECT alert_id, tenant, fingerprint, kind, 'open', severity, severity_rank, title, summary, scope, payload, "
    "links, received_at, received_at, NULL, NULL, NULL, 1, event_id FROM incoming ORDER BY ord "
    "ON CONFLICT (tenant, fingerprint) WHERE status != 'resolved' DO UPDATE SET "
    "event_count = alerts.event_count + 1, "
    + ", ".join(f"{column} = excluded.{column}" for column in _REFRESHED)
    + " RETURNING "
    + ", ".join(f"alerts.{column}" for column in _DECIDED)
    + "), "
    "stored AS ("
    "INSERT INTO events (id, tenant, client_id, kind, ts, received_at, severity, status, title, summary, scope, "
    "payload, links, dedup_key, alert_id, source) "
    "SELECT i.event_id, i.tenant, i.client_id, i.kind, i.ts, i.received_at, i.severity, i.status, i.title, "
    "i.summary, i.scope, i.payload, i.links, i.dedup_key, upserted.id, i.source "
    "FROM incoming AS i JOIN upserted ON upserted.tenant = i.tenant AND upserted.fingerprint = i.fingerprint "
    "ORDER BY i.ord) "
    "SELECT * FROM upserted"
)


def _fire_and_store_run(events: Sequence[tuple[Event, str]], rows: Sequence[dict[str, Any]]) -> str:
    run = [
        {
            "alert_id": row["id"],
            "event_id": event.id,
            "tenant": row["tenant"],
            "fingerprint": row["fingerprint"],
            "kind": row["kind"],
            "severity": row["severity"],
            "severity_rank": row["severity_rank"],
            "title": row["title"],
            "summary": row["summary"],
            "scope": row["scope"],
            "payload": row["payload"],
            "links": row["links"],
            "received_at": event.received_at.isoformat(),
            "client_id": event.client_id,
            "ts": event.ts.isoformat(),
            "status": event.status,
            "dedup_key": event.dedup_key,
            "source": event.source,
            "ord": place,
        }
        for place, ((event, _), row) in enumerate(zip(events, rows, strict=True))
    ]
    return json.dumps(run)


def _refresh_from_event(row: dict[str, Any], event: Event) -> None:
    row.update(
        last_seen=event.received_at,
        last_event_id=event.id,
        severity=event.severity,
        severity_rank=event.severity.rank,
        title=event.title,
        summary=event.summary,
        scope=event.scope.model_dump(mode="json"),
        payload=event.payload,
        links=[link.model_dump(mode="json") for link in event.links],
    )


async def apply_event(*, session: AsyncSession, db: Database, event: Event, fingerprint: str) -> AlertChange:
    """Open, update or resolve the alert one event speaks of, inside the caller's transaction."""
    book = AlertBook(conn=await session.connection(), db=db, direct=await direct_of(session))
    (change,) = await book.apply([(event, fingerprint)])
    return change


async def get(*, session: AsyncSession, alert_id: str) -> Alert | None:
    """One alert by id."""
    row = await session.get(AlertRow, alert_id)
    return alert_from_row(row) if row is not None else None


async def list_alerts(
    *,
    session: AsyncSession,
    tenants: list[str] | None,
    status: AlertStatus | None = None,
    min_severity: Severity | None = None,
    severity: Severity | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Alert], str | None]:
    """Alerts newest first; tenants None means every tenant. Returns the page and the last id for a cursor."""
    query = select(AlertRow)
    if tenants is not None:
        query = query.where(AlertRow.tenant.in_(tenants))
    if status is not None:
        query = query.where(AlertRow.status == status)
    if severity is not None:
        query = query.where(AlertRow.severity == severity)
    if min_severity is not None:
        query = query.where(AlertRow.severity_rank >= min_severity.rank)
    if cursor is not None:
        query = query.where(AlertRow.id < decode_cursor(cursor))
    rows = (await session.execute(query.order_by(AlertRow.id.desc()).limit(limit + 1))).scalars().all()
    page = [alert_from_row(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def mark_acknowledged(*, session: AsyncSession, alert_id: str, by: str, at: object) -> bool:
    """Move an open alert to acknowledged; False if it was not open."""
    result = await session.execute(
        update(AlertRow)
        .where(AlertRow.id == alert_id, AlertRow.status == AlertStatus.open)
        .values(status=AlertStatus.acknowledged, acknowledged_by=by, acknowledged_at=at)
    )
    return bool(getattr(result, "rowcount", 0))
