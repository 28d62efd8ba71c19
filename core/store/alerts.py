"""Alerts: opened, updated and resolved by events; listed and read by the API and the chat commands."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Alert, AlertStatus, Event, EventStatus, Severity
from core.store.convert import alert_from_row
from core.store.db import new_id
from core.store.pagination import decode_cursor
from core.store.tables import AlertRow


class Transition(StrEnum):
    opened = "opened"
    updated = "updated"
    resolved = "resolved"
    ignored = "ignored"  # a resolve for an alert that is not open


@dataclass(frozen=True)
class AlertChange:
    alert: Alert | None
    transition: Transition


def _active(tenant: str, fingerprint: str) -> Select[AlertRow]:
    return select(AlertRow).where(
        AlertRow.tenant == tenant, AlertRow.fingerprint == fingerprint, AlertRow.status != AlertStatus.resolved
    )


def _refresh_from_event(row: AlertRow, event: Event) -> None:
    row.last_seen = event.received_at
    row.event_count += 1
    row.last_event_id = event.id
    row.severity = event.severity
    row.severity_rank = event.severity.rank
    row.title = event.title
    row.summary = event.summary
    row.scope = event.scope.model_dump(mode="json")
    row.payload = event.payload
    row.links = [link.model_dump(mode="json") for link in event.links]


async def apply_event(*, session: AsyncSession, event: Event, fingerprint: str) -> AlertChange:
    """Open, update or resolve the alert an event speaks of, inside the caller's transaction."""
    existing = (await session.execute(_active(event.tenant, fingerprint).with_for_update())).scalar_one_or_none()
    if event.status is EventStatus.resolved:
        if existing is None:
            return AlertChange(None, Transition.ignored)
        _refresh_from_event(existing, event)
        existing.status = AlertStatus.resolved
        existing.resolved_at = event.received_at
        return AlertChange(alert_from_row(existing), Transition.resolved)
    if existing is not None:
        _refresh_from_event(existing, event)
        return AlertChange(alert_from_row(existing), Transition.updated)
    row = AlertRow(
        id=new_id("alr"),
        tenant=event.tenant,
        fingerprint=fingerprint,
        kind=event.kind,
        status=AlertStatus.open,
        severity=event.severity,
        severity_rank=event.severity.rank,
        title=event.title,
        summary=event.summary,
        scope=event.scope.model_dump(mode="json"),
        payload=event.payload,
        links=[link.model_dump(mode="json") for link in event.links],
        first_seen=event.received_at,
        last_seen=event.received_at,
        event_count=1,
        last_event_id=event.id,
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Another transaction opened the same alert a moment ago: update that one instead.
        existing = (await session.execute(_active(event.tenant, fingerprint).with_for_update())).scalar_one()
        _refresh_from_event(existing, event)
        return AlertChange(alert_from_row(existing), Transition.updated)
    return AlertChange(alert_from_row(row), Transition.opened)


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
