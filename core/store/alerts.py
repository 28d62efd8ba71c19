"""Alerts: opened, updated and resolved by events; listed and read by the API and the chat commands."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, insert, select, update
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
    """The active alerts a group of events speaks of: read (and on PostgreSQL locked) once, changed in memory,
    written back in two statements. Each identity may appear at most once per book (see core.ingest.rounds)."""

    def __init__(self, active: dict[tuple[str, str], dict[str, Any]]) -> None:
        self._active = active
        self._opened: list[dict[str, Any]] = []
        self._changed: dict[str, dict[str, Any]] = {}

    @classmethod
    async def load(cls, *, conn: AsyncConnection, db: Database, identities: Iterable[tuple[str, str]]) -> AlertBook:
        """The active alerts of these (tenant, fingerprint) identities."""
        wanted = sorted(set(identities))
        active: dict[tuple[str, str], dict[str, Any]] = {}
        if wanted:
            table = table_of(AlertRow)
            query = (
                select(table)
                .where(
                    table.c.tenant.in_({tenant for tenant, _ in wanted}),
                    table.c.fingerprint.in_({fingerprint for _, fingerprint in wanted}),
                    table.c.status != AlertStatus.resolved,
                )
                # Locked in identity order, so two overlapping groups on two replicas queue instead of deadlocking.
                .order_by(table.c.tenant, table.c.fingerprint)
            )
            if db.is_postgres:
                query = query.with_for_update()
            for row in (await conn.execute(query)).mappings():
                active[(row["tenant"], row["fingerprint"])] = dict(row)
        return cls(active)

    def apply(self, *, event: Event, fingerprint: str) -> AlertChange:
        """Open, update or resolve the alert the event speaks of (in memory until save)."""
        key = (event.tenant, fingerprint)
        existing = self._active.get(key)
        if event.status is EventStatus.resolved:
            if existing is None:
                return AlertChange(None, Transition.ignored)
            _refresh_from_event(existing, event)
            existing.update(status=AlertStatus.resolved, resolved_at=event.received_at)
            self._changed[existing["id"]] = existing
            del self._active[key]
            return AlertChange(existing, Transition.resolved)
        if existing is not None:
            _refresh_from_event(existing, event)
            self._changed.setdefault(existing["id"], existing)
            return AlertChange(existing, Transition.updated)
        opened = {
            "id": new_id("alr"),
            "tenant": event.tenant,
            "fingerprint": fingerprint,
            "kind": event.kind,
            "status": AlertStatus.open,
            "first_seen": event.received_at,
            "resolved_at": None,
            "acknowledged_by": None,
            "acknowledged_at": None,
            "event_count": 0,
        }
        _refresh_from_event(opened, event)
        self._opened.append(opened)
        self._active[key] = opened
        return AlertChange(opened, Transition.opened)

    async def save(self, *, conn: AsyncConnection) -> None:
        """Write the opened alerts and the changed ones."""
        table = table_of(AlertRow)
        if self._opened:
            # A concurrent group that opened the same identity first makes this raise IntegrityError; the caller
            # runs the group again, and then finds that alert.
            await conn.execute(insert(table), self._opened)
        # An alert opened in this book is inserted with its latest columns already.
        opened_ids = {row["id"] for row in self._opened}
        changed = [row for row in self._changed.values() if row["id"] not in opened_ids]
        if changed:
            await conn.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values({c: bindparam(f"b_{c}") for c in _CHANGING}),
                [{"b_id": row["id"], **{f"b_{c}": row[c] for c in _CHANGING}} for row in changed],
            )
        self._opened = []
        self._changed = {}


# What an event changes on its alert (besides opening it).
_CHANGING = (
    "last_seen",
    "event_count",
    "last_event_id",
    "severity",
    "severity_rank",
    "title",
    "summary",
    "scope",
    "payload",
    "links",
    "status",
    "resolved_at",
)


def _refresh_from_event(row: dict[str, Any], event: Event) -> None:
    row.update(
        last_seen=event.received_at,
        event_count=row["event_count"] + 1,
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
    conn = await session.connection()
    book = await AlertBook.load(conn=conn, db=db, identities=[(event.tenant, fingerprint)])
    change = book.apply(event=event, fingerprint=fingerprint)
    await book.save(conn=conn)
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
