"""Digests: events of a rule action coalesced into a durable window and sent as one message when it closes.

A window is a row per (tenant, rule action, channel, target, window end); its items, one per alert, live in
digest_items. Both are written in the ingest transaction, so a restart loses nothing. When the window's end
has passed (or it holds max_items alerts), one replica claims it with a conditional update
(`status open -> flushed`; on PostgreSQL the candidates are read with SKIP LOCKED) and, in the same
transaction, enqueues one delivery with purpose "digest" whose extra carries the whole content: a window
flushes exactly once, whichever replica gets there first.

Schedules: hourly (at :00), daily (09:00), weekly (Monday 09:00) or any five-field cron expression, read in the
action's digest timezone. A closing time that falls inside quiet hours moves to the first scheduled time after
them, so a digest never pings anyone at night.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, Event
from core.models.rules import DigestOptions, cron_expression
from core.quiet_hours import Layer, quiet_hold
from core.store import digests as digest_store
from core.store.convert import alert_from_row
from core.store.db import Database
from core.store.deliveries import new_delivery
from core.store.tables import AlertRow, DigestItemRow, DigestWindowRow

# Windows whose closing time is pushed past quiet hours are followed at most this many schedule steps.
_MAX_SKIPS = 500
_TEMPLATE_RE = re.compile(r"\{(\w+)\}")
DEFAULT_TITLE = "{rule} digest"


def _quiet_key(quiet: Sequence[Layer]) -> tuple[object, ...]:
    return tuple(
        (layer.source, w.window, w.timezone, tuple(w.days), w.min_severity, w.release)
        for layer in quiet
        for w in layer.windows
    )


# (schedule, timezone, quiet windows) -> the last answer and the raw schedule interval it holds for. Every event
# of a digest action asks, and croniter with the quiet-hours walk costs far more than a look-up.
_BOUNDS: dict[tuple[object, ...], tuple[datetime, datetime, tuple[datetime, datetime]]] = {}
_BOUNDS_SIZE = 1024


def window_bounds(
    *, schedule: str, timezone: str, now: datetime, quiet: Sequence[Layer] = ()
) -> tuple[datetime, datetime]:
    """The UTC (start, end) of the window that now falls in; an end inside quiet hours moves past them."""
    key = (schedule, timezone, _quiet_key(quiet))
    cached = _BOUNDS.get(key)
    # The answer depends only on which interval between two scheduled times now falls in.
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[2]
    expression = cron_expression(schedule)
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    end: datetime = croniter(expression, local).get_next(datetime)
    # The scheduled time at or before now: the window began then (and the answer holds until end).
    start: datetime = croniter(expression, end).get_prev(datetime)
    raw = (start.astimezone(UTC), end.astimezone(UTC))
    for _ in range(_MAX_SKIPS):
        hold = quiet_hold(now=end.astimezone(UTC), severity=None, layers=quiet)
        if hold is None:
            break
        # The first scheduled time at or after the quiet window's end.
        end = croniter(expression, (hold.until - timedelta(seconds=1)).astimezone(zone)).get_next(datetime)
    bounds = (start.astimezone(UTC), end.astimezone(UTC))
    if len(_BOUNDS) >= _BOUNDS_SIZE:
        _BOUNDS.pop(next(iter(_BOUNDS)))
    _BOUNDS[key] = (raw[0], raw[1], bounds)
    return bounds


def group_key(event: Event, group_by: Sequence[str]) -> str:
    """The group an event's alert is counted in: "severity: high · namespace: prod"."""
    parts = []
    for name in group_by or ("severity",):
        if name.startswith("label:"):
            label = name.removeprefix("label:")
            value = event.scope.labels.get(label, "")
            parts.append(f"{label}: {value or '(none)'}")
            continue
        if name == "severity":
            value = event.severity.value
        elif name == "namespace":
            value = event.scope.namespace
        elif name == "repo":
            value = event.scope.repo
        elif name == "kind":
            value = event.kind
        elif name == "status":
            value = event.status.value
        else:
            value = event.tenant
        parts.append(f"{name}: {value or '(none)'}")
    return " · ".join(parts)


def window_spec(
    *,
    tenant: str,
    rule: str,
    action_index: int,
    channel: str,
    target: str | None,
    schedule: str | None,
    options: DigestOptions,
    now: datetime,
    quiet: Sequence[Layer] = (),
    quiet_until: datetime | None = None,
) -> digest_store.WindowSpec:
    """The window an event goes into: the schedule's current window, or (quiet_until) the one that ends then."""
    if schedule is not None:
        start, end = window_bounds(schedule=schedule, timezone=options.timezone, now=now, quiet=quiet)
        kind = "schedule"
    elif quiet_until is not None:
        start, end, kind = now, quiet_until, "quiet"
    else:
        raise ValueError("a digest window needs a schedule or the end of quiet hours")
    return digest_store.WindowSpec(
        tenant=tenant,
        rule=rule,
        action_index=action_index,
        channel=channel,
        target=target,
        kind=kind,
        schedule=schedule,
        window_start=start,
        window_end=end,
        options=options.model_dump(mode="json"),
    )


async def add_event(
    *,
    session: AsyncSession,
    db: Database,
    spec: digest_store.WindowSpec,
    event: Event,
    now: datetime,
    worker: str,
    public_url: str,
) -> tuple[str, str | None]:
    """Add an event's alert to its window; flush the window at once when it reaches max_items.

    Returns (window id, the id of the digest delivery if this event filled the window).
    """
    options = DigestOptions.model_validate(spec.options)
    added = await digest_store.add_item(
        session=session,
        db=db,
        spec=spec,
        alert_id=event.alert_id or event.id,
        event_id=event.id,
        severity=event.severity,
        group_key=group_key(event, options.group_by),
        title=event.title,
        now=now,
    )
    if added.item_count < options.max_items:
        return added.window_id, None
    row = await digest_store.claim(session=session, window_id=added.window_id, now=now, worker=worker, reason="full")
    if row is None:
        return added.window_id, None
    return added.window_id, await emit(session=session, window=row, now=now, public_url=public_url)


def _title(window: DigestWindowRow, options: DigestOptions, total: int, events: int) -> str:
    values = {
        "rule": window.rule,
        "channel": window.channel,
        "tenant": window.tenant,
        "count": str(total),
        "events": str(events),
        "window_end": window.window_end.isoformat(timespec="minutes"),
        "window_start": window.window_start.isoformat(timespec="minutes"),
    }
    # Only known names are substituted: a template is data, never code (no str.format attribute access).
    return _TEMPLATE_RE.sub(lambda m: values.get(m.group(1), m.group(0)), options.template or DEFAULT_TITLE)[:300]


async def content(*, session: AsyncSession, window: DigestWindowRow, public_url: str, reason: str) -> dict[str, Any]:
    """The digest as Delivery.extra: title, plain-text summary, and "digest" with groups, top alerts and a link."""
    options = DigestOptions.model_validate(window.options)
    groups = await digest_store.group_counts(session=session, window_id=window.id)
    total, events = await digest_store.totals(session=session, window_id=window.id)
    top = await digest_store.top_items(session=session, window_id=window.id, limit=options.top)
    by_id: dict[str, AlertRow] = {}
    if top:
        rows = await session.execute(select(AlertRow).where(AlertRow.id.in_([item.alert_id for item in top])))
        by_id = {row.id: row for row in rows.scalars()}
    items: list[dict[str, Any]] = []
    for item in top:
        alert_row = by_id.get(item.alert_id)
        if alert_row is None:
            continue
        alert = alert_from_row(alert_row)
        items.append({**alert.model_dump(mode="json"), "digest_events": item.events})
    link = f"{public_url}/api/v1/digests/{window.id}" if public_url else None
    digest = {
        "window_id": window.id,
        "rule": window.rule,
        "action": window.action_index,
        "channel": window.channel,
        "tenant": window.tenant,
        "kind": window.kind,
        "schedule": window.schedule,
        "window_start": window.window_start.isoformat(),
        "window_end": window.window_end.isoformat(),
        "reason": reason,
        "total": total,
        "events": events,
        "group_by": options.group_by,
        "groups": groups,
        "items": items,
        "more": max(0, total - len(items)),
        "link": link,
    }
    title = _title(window, options, total, events)
    return {"title": title, "summary": summary_text(digest), "digest": digest}


async def emit(*, session: AsyncSession, window: DigestWindowRow, now: datetime, public_url: str) -> str:
    """Enqueue the digest delivery of a claimed window, in the caller's transaction; returns its id."""
    reason = window.flush_reason or "schedule"
    extra = await content(session=session, window=window, public_url=public_url, reason=reason)
    row = new_delivery(
        tenant=window.tenant,
        channel=window.channel,
        # One delivery per window, even if a flush were ever attempted twice.
        idempotency_key=f"digest:{window.id}",
        now=now,
        purpose=DeliveryPurpose.digest,
        rule=window.rule,
        action_index=window.action_index,
        target=window.target,
        extra=extra,
    )
    session.add(row)
    await digest_store.set_delivery(session=session, window_id=window.id, delivery_id=row.id)
    return row.id


async def flush_due(*, db: Database, now: datetime, worker: str, public_url: str, limit: int = 100) -> list[str]:
    """Flush every window whose end has passed; returns the digest deliveries enqueued (by this replica)."""
    created: list[str] = []
    async with db.transaction() as session:
        for window_id in await digest_store.due_window_ids(session=session, db=db, now=now, limit=limit):
            row = await digest_store.claim(
                session=session, window_id=window_id, now=now, worker=worker, reason="schedule"
            )
            if row is None:
                continue  # another replica flushed it between our read and our update
            created.append(await emit(session=session, window=row, now=now, public_url=public_url))
    return created


async def list_windows(
    *, db: Database, tenants: list[str] | None, status: str | None, limit: int
) -> list[DigestWindowRow]:
    """Digest windows, the ones closing soonest first."""
    async with db.read() as session:
        return await digest_store.list_windows(session=session, tenants=tenants, status=status, limit=limit)


async def window_with_items(*, db: Database, window_id: str) -> tuple[DigestWindowRow, list[DigestItemRow]] | None:
    """A window and every alert in it, in digest order; None if there is no such window."""
    async with db.read() as session:
        row = await digest_store.get(session=session, window_id=window_id)
        if row is None:
            return None
        return row, await digest_store.items(session=session, window_id=row.id, limit=10_000)


# ---------------------------------------------------------------- plain text (the HTML e-mail: channels/email_views.py)


def alerts_of(digest: dict[str, Any]) -> list[Alert]:
    """The listed alerts of a digest's content, as models (for the card renderers)."""
    return [Alert.model_validate({k: v for k, v in item.items() if k != "digest_events"}) for item in digest["items"]]


def summary_text(digest: dict[str, Any]) -> str:
    """The digest as plain text: totals, counts per group, the top alerts, and "and N more"."""
    total, events = digest["total"], digest["events"]
    noun = "alert" if total == 1 else "alerts"
    lines = [f"{total} {noun} ({events} events) until {digest['window_end']}"]
    groups = sorted(digest["groups"].items(), key=lambda kv: (-kv[1], kv[0]))
    if groups:
        lines.append("; ".join(f"{name}: {count}" for name, count in groups))
    for item in digest["items"]:
        where = " ".join(p for p in (item["scope"].get("namespace"), item["scope"].get("repo")) if p)
        lines.append(
            f"- [{item['severity'].upper()}] {item['title']}"
            + (f" ({where})" if where else "")
            + f" · {item['digest_events']} events · {item['status']} · {item['id']}"
        )
    if digest["more"]:
        lines.append(f"and {digest['more']} more" + (f": {digest['link']}" if digest.get("link") else ""))
    return "\n".join(lines)
