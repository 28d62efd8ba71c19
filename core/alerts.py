"""Reading alerts for the surfaces (the HTTP API, the cards of a click): each call opens its own read session."""

from __future__ import annotations

from core.models.common import Severity
from core.models.events import Alert, AlertStatus
from core.store import alerts as alert_store
from core.store.db import Database


async def list_alerts(
    *,
    db: Database,
    tenants: list[str] | None,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    min_severity: Severity | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Alert], str | None]:
    """Alerts newest first (tenants None: every tenant); the page and the last id when there is more.

    ValueError for a cursor we did not make.
    """
    async with db.read() as session:
        return await alert_store.list_alerts(
            session=session,
            tenants=tenants,
            status=status,
            severity=severity,
            min_severity=min_severity,
            limit=limit,
            cursor=cursor,
        )


async def get_alert(*, db: Database, alert_id: str) -> Alert | None:
    """One alert by id."""
    async with db.read() as session:
        return await alert_store.get(session=session, alert_id=alert_id)
