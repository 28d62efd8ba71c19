"""Digest windows and their items: added to in the ingest transaction, claimed and flushed exactly once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.common import Severity
from core.store.db import Database, new_id
from core.store.tables import DigestItemRow, DigestWindowRow

OPEN = "open"
FLUSHED = "flushed"


def window_key(
    *, tenant: str, rule: str, action_index: int, channel: str, target: str | None, window_end: datetime
) -> str:
    """The identity of a window: one open window per (tenant, rule action, channel, target, end)."""
    raw = json.dumps([tenant, rule, action_index, channel, target, window_end.isoformat()])
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class WindowSpec:
    """Which window an item goes into, and what the window needs to know when it flushes."""

    tenant: str
    rule: str
    action_index: int
    channel: str
    target: str | None
    kind: str  # schedule | quiet
    schedule: str | None
    window_start: datetime
    window_end: datetime
    options: dict[str, Any]


@dataclass(frozen=True)
class ItemAdded:
    """The window an item went into, and how full it is now."""

    window_id: str
    item_count: int
    new_item: bool


async def add_item(
    *,
    session: AsyncSession,
    db: Database,
    spec: WindowSpec,
    alert_id: str,
    event_id: str,
    severity: Severity,
    group_key: str,
    title: str,
    now: datetime,
) -> ItemAdded:
    """Put an alert into the open window of spec (opening it if need be); a repeat of an alert counts up."""
    key = window_key(
        tenant=spec.tenant,
        rule=spec.rule,
        action_index=spec.action_index,
        channel=spec.channel,
        target=spec.target,
        window_end=spec.window_end,
    )
    windows = DigestWindowRow.__table__
    # The upsert takes the open window's row lock (PostgreSQL): concurrent adds and a flush queue on it.
    window_id = (
        await session.execute(
            db.insert(windows)
            .values(
                id=new_id("dgw"),
                key=key,
                tenant=spec.tenant,
                rule=spec.rule,
                action_index=spec.action_index,
                channel=spec.channel,
                target=spec.target,
                kind=spec.kind,
                schedule=spec.schedule,
                window_start=spec.window_start,
                window_end=spec.window_end,
                options=spec.options,
                status=OPEN,
                item_count=0,
                event_count=1,
                created_at=now,
            )
            .on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=[windows.c.key],
                # A literal predicate: PostgreSQL matches the partial unique index by its text, not a parameter.
                index_where=windows.c.status == literal_column(f"'{OPEN}'"),
                set_={"event_count": windows.c.event_count + 1},
            )
            .returning(windows.c.id)
        )
    ).scalar_one()
    items = DigestItemRow.__table__
    events = (
        await session.execute(
            db.insert(items)
            .values(
                window_id=window_id,
                alert_id=alert_id,
                event_id=event_id,
                severity=severity.value,
                severity_rank=severity.rank,
                group_key=group_key[:500],
                title=title[:500],
                events=1,
                first_at=now,
                last_at=now,
            )
            .on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=[items.c.window_id, items.c.alert_id],
                set_={
                    "events": items.c.events + 1,
                    "event_id": event_id,
                    "severity": severity.value,
                    "severity_rank": severity.rank,
                    "group_key": group_key[:500],
                    "title": title[:500],
                    "last_at": now,
                },
            )
            .returning(items.c.events)
        )
    ).scalar_one()
    new_item = events == 1
    statement = update(DigestWindowRow).where(DigestWindowRow.id == window_id)
    if new_item:
        statement = statement.values(item_count=DigestWindowRow.item_count + 1)
    else:
        statement = statement.values(item_count=DigestWindowRow.item_count)
    item_count = (await session.execute(statement.returning(DigestWindowRow.item_count))).scalar_one()
    return ItemAdded(window_id, int(item_count), new_item)


async def due_window_ids(*, session: AsyncSession, db: Database, now: datetime, limit: int) -> list[str]:
    """Open windows whose end has passed, oldest first; PostgreSQL replicas skip the ones another is flushing."""
    query = (
        select(DigestWindowRow.id)
        .where(DigestWindowRow.status == OPEN, DigestWindowRow.window_end <= now)
        .order_by(DigestWindowRow.window_end)
        .limit(limit)
    )
    if db.is_postgres:
        query = query.with_for_update(skip_locked=True)
    return list((await session.execute(query)).scalars())


async def claim(
    *, session: AsyncSession, window_id: str, now: datetime, worker: str, reason: str
) -> DigestWindowRow | None:
    """Mark an open window flushed (the conditional update that makes each window flush once); None if it was not."""
    row = (
        await session.execute(
            update(DigestWindowRow)
            .where(DigestWindowRow.id == window_id, DigestWindowRow.status == OPEN)
            .values(status=FLUSHED, flushed_at=now, flushed_by=worker, flush_reason=reason)
            .returning(DigestWindowRow)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return row


async def set_delivery(*, session: AsyncSession, window_id: str, delivery_id: str) -> None:
    """Remember which delivery a flushed window became."""
    await session.execute(
        update(DigestWindowRow).where(DigestWindowRow.id == window_id).values(delivery_id=delivery_id)
    )


async def group_counts(*, session: AsyncSession, window_id: str) -> dict[str, int]:
    """How many alerts the window holds per group."""
    rows = await session.execute(
        select(DigestItemRow.group_key, func.count())
        .where(DigestItemRow.window_id == window_id)
        .group_by(DigestItemRow.group_key)
    )
    return {key: int(count) for key, count in rows.all()}


async def totals(*, session: AsyncSession, window_id: str) -> tuple[int, int]:
    """(alerts, events) in the window."""
    alerts, events = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(DigestItemRow.events), 0)).where(
                DigestItemRow.window_id == window_id
            )
        )
    ).one()
    return int(alerts), int(events)


async def top_items(*, session: AsyncSession, window_id: str, limit: int) -> list[DigestItemRow]:
    """The items a digest lists: most severe first, then the most repeated, then the latest."""
    rows = await session.execute(
        select(DigestItemRow)
        .where(DigestItemRow.window_id == window_id)
        .order_by(
            DigestItemRow.severity_rank.desc(),
            DigestItemRow.events.desc(),
            DigestItemRow.last_at.desc(),
            DigestItemRow.id,
        )
        .limit(limit)
    )
    return list(rows.scalars())


async def get(*, session: AsyncSession, window_id: str) -> DigestWindowRow | None:
    """One window by id."""
    return await session.get(DigestWindowRow, window_id)


async def list_windows(
    *, session: AsyncSession, tenants: list[str] | None, status: str | None, limit: int
) -> list[DigestWindowRow]:
    """Windows, the ones closing soonest first."""
    query = select(DigestWindowRow)
    if tenants is not None:
        query = query.where(DigestWindowRow.tenant.in_(tenants))
    if status is not None:
        query = query.where(DigestWindowRow.status == status)
    rows = await session.execute(query.order_by(DigestWindowRow.window_end, DigestWindowRow.id).limit(limit))
    return list(rows.scalars())


async def items(*, session: AsyncSession, window_id: str, limit: int) -> list[DigestItemRow]:
    """Every item of a window, in digest order."""
    return await top_items(session=session, window_id=window_id, limit=limit)
