"""The report and the digests over HTTP: preview and send the report, read digest windows and their items."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from bot.handlers.http import (
    ApiError,
    authenticate,
    hide_unless_visible,
    json_response,
    parse_model,
    query_model,
    read_json,
    runtime_of,
)
from core import digests, reports
from core.config import ApiScope
from core.models.common import Strict
from core.store.tables import DigestItemRow, DigestWindowRow


class SendReport(Strict):
    channels: list[str] | None = Field(default=None, description="default: reports.channels of the config")


class DigestQuery(Strict):
    status: Literal["open", "flushed"] | None = None
    limit: int = Field(default=100, ge=1, le=1000)


async def preview_report(request: web.Request) -> web.Response:
    """GET /api/v1/reports/preview: the report as it would be sent now (all-tenant keys only for a "*" report)."""
    principal = authenticate(request, ApiScope.notify_read)
    runtime = runtime_of(request)
    tenant = runtime.config.reports.tenant
    if tenant == "*" and principal.tenant != "*":
        raise ApiError(403, "the report covers every tenant: it needs a key for every tenant")
    principal.check_tenant(tenant)
    extra = await reports.preview(
        db=runtime.db, config=runtime.config, now=runtime.clock.now(), public_url=runtime.public_url
    )
    return json_response({"title": extra["title"], "report": extra["report"], "text": extra["summary"]})


async def send_report(request: web.Request) -> web.Response:
    """POST /api/v1/reports/send: send the report now, to the configured channels or those named."""
    principal = authenticate(request, ApiScope.notify_admin)
    if principal.tenant != "*":
        raise ApiError(403, "sending the report needs a key for every tenant")
    runtime = runtime_of(request)
    body: Any = await read_json(request) if request.can_read_body else {}
    spec = parse_model(SendReport, body)
    channels = spec.channels if spec.channels is not None else list(runtime.config.reports.channels)
    unknown = [name for name in channels if name not in runtime.channels]
    if unknown or not channels:
        message = f"no channel named {unknown[0]!r}" if unknown else "no channels: set reports.channels or name some"
        raise ApiError(422, "invalid request", errors=[{"field": "channels", "message": message}])
    ids = await reports.send_now(
        db=runtime.db,
        config=runtime.config,
        now=runtime.clock.now(),
        worker="api",
        public_url=runtime.public_url,
        channels=channels,
    )
    if runtime.dispatcher is not None:
        runtime.dispatcher.wake()
    return json_response({"deliveries": ids}, status=202)


def _window_json(row: DigestWindowRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant": row.tenant,
        "rule": row.rule,
        "action": row.action_index,
        "channel": row.channel,
        "target": row.target,
        "kind": row.kind,
        "schedule": row.schedule,
        "window_start": row.window_start.isoformat(),
        "window_end": row.window_end.isoformat(),
        "status": row.status,
        "items": row.item_count,
        "events": row.event_count,
        "flushed_at": row.flushed_at.isoformat() if row.flushed_at else None,
        "flush_reason": row.flush_reason,
        "delivery_id": row.delivery_id,
    }


def _item_json(row: DigestItemRow) -> dict[str, Any]:
    return {
        "alert_id": row.alert_id,
        "last_event_id": row.event_id,
        "severity": row.severity,
        "group": row.group_key,
        "title": row.title,
        "events": row.events,
        "first_at": row.first_at.isoformat(),
        "last_at": row.last_at.isoformat(),
    }


async def list_digests(request: web.Request) -> web.Response:
    """GET /api/v1/digests?status=open|flushed: digest windows, closing soonest first."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(DigestQuery, request)
    rows = await digests.list_windows(
        db=runtime_of(request).db, tenants=principal.tenants, status=query.status, limit=query.limit
    )
    return json_response({"items": [_window_json(row) for row in rows]})


async def get_digest(request: web.Request) -> web.Response:
    """GET /api/v1/digests/{id}: one window and every alert in it (where a digest's "and N more" links to)."""
    principal = authenticate(request, ApiScope.notify_read)
    found = await digests.window_with_items(db=runtime_of(request).db, window_id=request.match_info["window_id"])
    if found is None:
        raise ApiError(404, "no such digest")
    row, items = found
    hide_unless_visible(principal, row.tenant, "no such digest")
    return json_response({**_window_json(row), "alerts": [_item_json(item) for item in items]})


def routes() -> list[web.RouteDef]:
    """The report and digest routes."""
    return [
        web.get("/api/v1/reports/preview", preview_report),
        web.post("/api/v1/reports/send", send_report),
        web.get("/api/v1/digests", list_digests),
        web.get("/api/v1/digests/{window_id}", get_digest),
    ]
