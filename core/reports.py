"""The scheduled report: open alerts, pending approvals and what expires soon, sent to the channels that opt in.

Each scheduled time fires once across replicas: the run is a row with a unique (name, scheduled_for), inserted
with ON CONFLICT DO NOTHING; the replica whose insert lands enqueues one delivery (purpose "report") per
channel in the same transaction. Email renders it as HTML tables, Slack and Teams as a card, webhooks receive
the JSON of Delivery.extra["report"]. `ackbot report send` runs it by hand.

"Expiring" means an alert that is not resolved and whose payload carries `expires_at` (an ISO 8601 time or Unix
seconds) within `expiring_within_days`, or already past: certificates, secrets, licences.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import AckbotConfig, ReportsConfig
from core.models.common import Severity
from core.models.deliveries import DeliveryPurpose
from core.models.events import AlertStatus
from core.models.rules import cron_expression
from core.store import approvals as approval_store
from core.store.convert import alert_from_row
from core.store.db import Database, is_read, new_id
from core.store.deliveries import new_delivery
from core.store.tables import AlertRow, ReportRunRow

log = logging.getLogger("ackbot.reports")

REPORT_NAME = "report"
# Alerts with an expires_at read per report: enough for any real fleet of certificates, bounded all the same.
EXPIRING_SCAN_LIMIT = 10_000


def parse_expiry(value: Any) -> datetime | None:
    """payload.expires_at as a UTC datetime: ISO 8601 text ("2026-04-01T00:00:00Z") or Unix seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def last_scheduled(config: ReportsConfig, now: datetime) -> datetime:
    """The latest scheduled time at or before now, in UTC."""
    expression = cron_expression(config.schedule)
    zone = ZoneInfo(config.timezone)
    # Starting a second later makes a run due exactly at now count as due now.
    previous: datetime = croniter(expression, (now + timedelta(seconds=1)).astimezone(zone)).get_prev(datetime)
    return previous.astimezone(UTC)


def next_scheduled(config: ReportsConfig, now: datetime) -> datetime:
    """The next scheduled time after now, in UTC."""
    expression = cron_expression(config.schedule)
    following: datetime = croniter(expression, now.astimezone(ZoneInfo(config.timezone))).get_next(datetime)
    return following.astimezone(UTC)


async def _approvals_section(session: AsyncSession, tenants: list[str] | None, limit: int) -> dict[str, Any]:
    # In a write transaction a savepoint keeps a failure here from spoiling the rest of it; a read (READ) has no
    # transaction on the server, so a failed statement spoils nothing and there is nothing to set a savepoint in.
    try:
        async with contextlib.nullcontext() if is_read(session) else session.begin_nested():
            page, more = await approval_store.list_approvals(
                session=session, tenants=tenants, states=approval_store.OPEN_STATES, limit=limit
            )
    except SQLAlchemyError as exc:
        log.warning("report: pending approvals left out: %s", exc)
        return {"available": False, "note": "pending approvals could not be read", "total": 0, "items": []}
    items = [approval.model_dump(mode="json") for approval in page]
    return {"available": True, "note": None, "total": len(items), "more": more is not None, "items": items}


async def build(*, session: AsyncSession, config: ReportsConfig, now: datetime, public_url: str) -> dict[str, Any]:
    """The report as Delivery.extra: title, plain-text summary, and "report" with its three sections."""
    tenants = None if config.tenant == "*" else [config.tenant]
    unresolved = AlertRow.status != AlertStatus.resolved
    scope = [unresolved] if tenants is None else [unresolved, AlertRow.tenant.in_(tenants)]

    by_severity_rows = await session.execute(
        select(AlertRow.severity, func.count()).where(*scope).group_by(AlertRow.severity)
    )
    by_severity = {severity: int(count) for severity, count in by_severity_rows.all()}
    ordered = {s.value: by_severity[s.value] for s in reversed(Severity) if s.value in by_severity}
    open_rows = await session.execute(
        select(AlertRow)
        .where(*scope)
        .order_by(AlertRow.severity_rank.desc(), AlertRow.first_seen, AlertRow.id)
        .limit(config.max_items)
    )
    open_items = [alert_from_row(row).model_dump(mode="json") for row in open_rows.scalars()]

    horizon = now + timedelta(days=config.expiring_within_days)
    candidates = await session.execute(
        select(AlertRow)
        .where(*scope, AlertRow.payload["expires_at"].as_string().is_not(None))
        .limit(EXPIRING_SCAN_LIMIT)
    )
    expiring: list[dict[str, Any]] = []
    for row in candidates.scalars():
        expires = parse_expiry((row.payload or {}).get("expires_at"))
        if expires is None or expires > horizon:
            continue
        expiring.append(
            {
                "alert": alert_from_row(row).model_dump(mode="json"),
                "expires_at": expires.isoformat(),
                "days_left": round((expires - now).total_seconds() / 86400, 1),
                "expired": expires <= now,
            }
        )
    expiring.sort(key=lambda item: (item["expires_at"], item["alert"]["id"]))

    report = {
        "generated_at": now.isoformat(),
        "tenant": config.tenant,
        "open_alerts": {"total": sum(by_severity.values()), "by_severity": ordered, "items": open_items},
        "pending_approvals": await _approvals_section(session, tenants, config.max_items),
        "expiring": {
            "within_days": config.expiring_within_days,
            "total": len(expiring),
            "items": expiring[: config.max_items],
        },
        "link": f"{public_url}/api/v1/alerts?status=open" if public_url else None,
    }
    title = "ackbot report" + (f" for {config.tenant}" if config.tenant != "*" else "")
    return {"title": title, "summary": summary_text(report), "report": report}


async def _enqueue(
    session: AsyncSession,
    *,
    run: ReportRunRow,
    config: ReportsConfig,
    channels: list[str],
    now: datetime,
    public_url: str,
) -> list[str]:
    extra = await build(session=session, config=config, now=now, public_url=public_url)
    extra["report"]["scheduled_for"] = run.scheduled_for.isoformat()
    extra["report"]["trigger"] = run.trigger
    ids = []
    for channel in channels:
        row = new_delivery(
            tenant=config.tenant,
            channel=channel,
            idempotency_key=f"report:{run.id}:{channel}",
            now=now,
            purpose=DeliveryPurpose.report,
            extra=extra,
        )
        session.add(row)
        ids.append(row.id)
    run.deliveries = len(ids)
    run.summary = {
        "open_alerts": extra["report"]["open_alerts"]["total"],
        "pending_approvals": extra["report"]["pending_approvals"]["total"],
        "expiring": extra["report"]["expiring"]["total"],
    }
    return ids


async def _claim_run(
    session: AsyncSession, db: Database, *, scheduled_for: datetime, trigger: str, now: datetime, worker: str
) -> ReportRunRow | None:
    table = ReportRunRow.__table__
    run_id = (
        await session.execute(
            db.insert(table)
            .values(
                id=new_id("rpt"),
                name=REPORT_NAME,
                scheduled_for=scheduled_for,
                trigger=trigger,
                started_at=now,
                claimed_by=worker,
                deliveries=0,
                summary={},
            )
            .on_conflict_do_nothing(index_elements=[table.c.name, table.c.scheduled_for])  # type: ignore[attr-defined]
            .returning(table.c.id)
        )
    ).scalar_one_or_none()
    if run_id is None:
        return None
    return await session.get(ReportRunRow, run_id)


async def fire_due(*, db: Database, config: AckbotConfig, now: datetime, worker: str, public_url: str) -> list[str]:
    """Fire the report if a scheduled time has come and no replica fired it yet; returns the deliveries enqueued."""
    settings = config.reports
    if not settings.channels:
        return []
    scheduled = last_scheduled(settings, now)
    if now - scheduled > settings.catch_up:
        return []
    async with db.transaction() as session:
        run = await _claim_run(session, db, scheduled_for=scheduled, trigger="schedule", now=now, worker=worker)
        if run is None:
            return []
        ids = await _enqueue(
            session, run=run, config=settings, channels=list(settings.channels), now=now, public_url=public_url
        )
    log.info("report for %s sent to %s", scheduled.isoformat(), ", ".join(settings.channels))
    return ids


async def send_now(
    *,
    db: Database,
    config: AckbotConfig,
    now: datetime,
    worker: str,
    public_url: str,
    channels: list[str] | None = None,
) -> list[str]:
    """Send the report now, by hand, to the configured channels (or those given); returns the deliveries."""
    targets = list(channels if channels is not None else config.reports.channels)
    if not targets:
        raise ValueError("no channels: list them under reports.channels or name one")
    async with db.transaction() as session:
        run = await _claim_run(session, db, scheduled_for=now, trigger="manual", now=now, worker=worker)
        if run is None:
            raise RuntimeError("a report was sent at this very instant; try again")
        return await _enqueue(session, run=run, config=config.reports, channels=targets, now=now, public_url=public_url)


async def preview(*, db: Database, config: AckbotConfig, now: datetime, public_url: str) -> dict[str, Any]:
    """The report as it would be sent now, without sending it."""
    async with db.read() as session:
        return await build(session=session, config=config.reports, now=now, public_url=public_url)


# ---------------------------------------------------------------- plain text (the HTML e-mail: channels/email_views.py)


def _alert_line(alert: dict[str, Any]) -> str:
    where = " ".join(p for p in (alert["scope"].get("namespace"), alert["scope"].get("repo")) if p)
    return f"[{alert['severity'].upper()}] {alert['title']}" + (f" ({where})" if where else "") + f" · {alert['id']}"


def summary_text(report: dict[str, Any]) -> str:
    """The report as plain text, for channels without cards or HTML."""
    open_alerts, approvals, expiring = report["open_alerts"], report["pending_approvals"], report["expiring"]
    counts = ", ".join(f"{count} {severity}" for severity, count in open_alerts["by_severity"].items())
    lines = [f"Open alerts: {open_alerts['total']}" + (f" ({counts})" if counts else "")]
    lines += [f"- {_alert_line(a)}" for a in open_alerts["items"]]
    if approvals["available"]:
        lines.append(f"Pending approvals: {approvals['total']}")
        lines += [f"- {a['title']} · {a['state']} · expires {a['expires_at']} · {a['id']}" for a in approvals["items"]]
    else:
        lines.append(f"Pending approvals: not included ({approvals['note']})")
    lines.append(f"Expiring within {expiring['within_days']} days: {expiring['total']}")
    for item in expiring["items"]:
        when = "EXPIRED" if item["expired"] else f"in {item['days_left']} days"
        lines.append(f"- {item['alert']['title']} · {when} ({item['expires_at']}) · {item['alert']['id']}")
    return "\n".join(lines)
