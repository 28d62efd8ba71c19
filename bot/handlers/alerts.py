"""Reading alerts: GET /api/v1/alerts and /api/v1/alerts/{id}."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from bot.handlers.http import (
    ApiError,
    authenticate,
    hide_unless_visible,
    invalid_cursor,
    json_response,
    query_model,
    runtime_of,
)
from bot.handlers.openapi import documented
from core import alerts
from core.config import ApiScope
from core.models.common import Severity, Strict
from core.models.events import Alert, AlertStatus
from core.store.pagination import encode_cursor


class AlertQuery(Strict):
    status: AlertStatus | None = None
    severity: Severity | None = None
    min_severity: Severity | None = None
    tenant: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


@documented(
    summary="Alerts newest first, filtered and paginated",
    scope=ApiScope.notify_read,
    query=AlertQuery,
    responses={200: AlertPage},
    tags=("alerts",),
)
async def list_alerts(request: web.Request) -> web.Response:
    """Alerts newest first, filtered and paginated with an opaque cursor."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(AlertQuery, request)
    tenants = principal.tenants
    if query.tenant is not None:
        principal.check_tenant(query.tenant)
        tenants = [query.tenant]
    try:
        page, last = await alerts.list_alerts(
            db=runtime_of(request).db,
            tenants=tenants,
            status=query.status,
            severity=query.severity,
            min_severity=query.min_severity,
            limit=query.limit,
            cursor=query.cursor,
        )
    except ValueError:
        raise invalid_cursor() from None
    return json_response(AlertPage(items=page, next_cursor=encode_cursor(last) if last else None))


@documented(summary="One alert", scope=ApiScope.notify_read, responses={200: Alert}, tags=("alerts",))
async def get_alert(request: web.Request) -> web.Response:
    """One alert by id; another tenant's alert is not found (404)."""
    principal = authenticate(request, ApiScope.notify_read)
    alert = await alerts.get_alert(db=runtime_of(request).db, alert_id=request.match_info["alert_id"])
    if alert is None:
        raise ApiError(404, "no such alert")
    hide_unless_visible(principal, alert.tenant, "no such alert")
    return json_response(alert)


def routes() -> list[web.RouteDef]:
    """The alert routes."""
    return [web.get("/api/v1/alerts", list_alerts), web.get("/api/v1/alerts/{alert_id}", get_alert)]
