"""Alerts: opened, updated and resolved by events; listed and read by the API and the chat commands."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, bindparam, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.models import Alert, AlertStatus, Event, EventStatus, Severity
from core.store.convert import alert_from_columns, alert_from_row
from core.store.db import Database, new_id
from core.store.pagination import decode_cursor
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

    def __init__(self, *, conn: AsyncConnection, db: Database) -> None:
        self.conn = conn
        self.db = db

    async def apply(self, events: Sequence[tuple[Event, str]]) -> list[AlertChange]:
        """Open, update or resolve the alert of each (event, fingerprint); the changes in the same order."""
        firing = [(event, fp) for event, fp in events if event.status is not EventStatus.resolved]
        resolving = [(event, fp) for event, fp in events if event.status is EventStatus.resolved]
        changes = {**await self._fire(firing), **await self._resolve(resolving)}
        return [changes[(event.tenant, fp)] for event, fp in events]

    async def _fire(self, events: Sequence[tuple[Event, str]]) -> dict[tuple[str, str], AlertChange]:
        if not events:
            return {}
        rows = []
        for event, fingerprint in sorted(events, key=lambda pair: (pair[0].tenant, pair[1])):
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
            rows.append(row)
        upsert = _fire_statement(self.db.dialect)
        ours = {row["id"] for row in rows}
        changes = {}
        for stored in (await self.conn.execute(upsert, rows)).mappings():
            columns = dict(stored)
            transition = Transition.opened if columns["id"] in ours else Transition.updated
            changes[(columns["tenant"], columns["fingerprint"])] = AlertChange(columns, transition)
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


# The statements are built once: building one costs more than running it (SQLAlchemy's coercions and cache key).
@functools.cache
def _fire_statement(dialect: str) -> Any:
    table = table_of(AlertRow)
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return (
        # The active alert of the identity, if there is one, is updated in place (and stays acknowledged if it
        # was); rows are in identity order, the order PostgreSQL locks them in, so two replicas cannot deadlock.
        insert.on_conflict_do_update(
            index_elements=[table.c.tenant, table.c.fingerprint],
            index_where=table.c.status != literal_column("'resolved'"),
            set_={"event_count": table.c.event_count + 1, **{column: insert.excluded[column] for column in _REFRESHED}},
        ).returning(*table.c)
    )


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
    (change,) = await AlertBook(conn=await session.connection(), db=db).apply([(event, fingerprint)])
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
