"""Event intake: our envelope, Alertmanager and Grafana webhooks. Answered 202 only after the commit."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel, Field

from bot.handlers.http import (
    ApiError,
    authenticate,
    decode_json,
    json_response,
    parse_json_model,
    parse_model,
    query_model,
    read_body,
    read_json,
    runtime_of,
)
from bot.handlers.openapi import documented
from core.auth import Principal
from core.config import ApiScope
from core.ingest import IngestResult
from core.models.common import Strict
from core.models.events import EventIn
from core.sources import alertmanager, grafana

ORIGIN_HEADER = "X-Ackbot-Origin"
OWN_ORIGIN = "the request carries this ackbot's own origin (loop prevention)"


class TenantQuery(Strict):
    tenant: str | None = Field(default=None, min_length=1, max_length=100, description="the tenant of the alerts")


class SourceResult(BaseModel):
    """One result per alert of a webhook payload."""

    events: list[IngestResult]


def _refuse_own_origin(request: web.Request) -> None:
    # An event that carries our own origin came from one of our webhooks: accepting it could loop forever.
    if request.headers.get(ORIGIN_HEADER) == runtime_of(request).origin:
        raise ApiError(409, "this request carries this ackbot's own origin; refused to prevent a delivery loop")


def _tenant_resolver(principal: Principal) -> Callable[[EventIn], str]:
    def tenant_for(event: EventIn) -> str:
        tenant = event.tenant or (principal.tenant if principal.tenant != "*" else "default")
        principal.check_tenant(tenant)
        return tenant

    return tenant_for


async def _accept(request: web.Request, principal: Principal, events: list[EventIn], source: str) -> list[IngestResult]:
    runtime = runtime_of(request)
    tenant_for = _tenant_resolver(principal)
    tenants = [tenant_for(event) for event in events]  # refuse another tenant's event before anything is written
    results = await runtime.intake.submit(events=events, tenants=tenants, source=source)
    if runtime.dispatcher is not None and any(r.deliveries for r in results):
        runtime.dispatcher.wake()
    return results


@documented(
    summary="Send one event, or an array of up to 1000; answered after the commit",
    scope=ApiScope.events_write,
    body=EventIn | list[EventIn],
    responses={202: IngestResult | list[IngestResult], 409: OWN_ORIGIN},
    tags=("events",),
)
async def post_events(request: web.Request) -> web.Response:
    """POST /api/v1/events: one event or a JSON array of up to max_batch."""
    principal = authenticate(request, ApiScope.events_write)
    _refuse_own_origin(request)
    raw = await read_body(request)
    if raw.lstrip().startswith(b"{"):
        # One event, the common case: validated from the bytes, without a dict of the document in between.
        event = parse_json_model(EventIn, raw)
        (result,) = await _accept(request, principal, [event], "api")
        return json_response(result, status=202)
    body = decode_json(raw)
    limit = runtime_of(request).config.server.max_batch
    if isinstance(body, list):
        if not body:
            raise ApiError(422, "invalid request", errors=[{"field": "(body)", "message": "the array is empty"}])
        if len(body) > limit:
            raise ApiError(413, f"at most {limit} events per request")
        events = [parse_model(EventIn, item, prefix=(index,)) for index, item in enumerate(body)]
        results = await _accept(request, principal, events, "api")
        return json_response([r.model_dump(mode="json") for r in results], status=202)
    event = parse_model(EventIn, body)
    (result,) = await _accept(request, principal, [event], "api")
    return json_response(result, status=202)


@documented(
    summary="Prometheus Alertmanager webhook (version 4)",
    scope=ApiScope.events_write,
    body=alertmanager.AlertmanagerPayload,
    query=TenantQuery,
    responses={202: SourceResult, 409: OWN_ORIGIN},
    tags=("events",),
)
async def post_alertmanager(request: web.Request) -> web.Response:
    """POST /api/v1/ingest/alertmanager: Alertmanager's webhook (version 4)."""
    principal = authenticate(request, ApiScope.events_write)
    _refuse_own_origin(request)
    tenant = query_model(TenantQuery, request).tenant
    payload = parse_model(alertmanager.AlertmanagerPayload, await read_json(request))
    events = alertmanager.to_events(payload, tenant=tenant)
    return json_response(SourceResult(events=await _accept(request, principal, events, "alertmanager")), 202)


@documented(
    summary="Grafana unified alerting webhook",
    scope=ApiScope.events_write,
    body=grafana.GrafanaPayload,
    query=TenantQuery,
    responses={202: SourceResult, 409: OWN_ORIGIN},
    tags=("events",),
)
async def post_grafana(request: web.Request) -> web.Response:
    """POST /api/v1/ingest/grafana: Grafana unified alerting's webhook."""
    principal = authenticate(request, ApiScope.events_write)
    _refuse_own_origin(request)
    tenant = query_model(TenantQuery, request).tenant
    payload = parse_model(grafana.GrafanaPayload, await read_json(request))
    events = grafana.to_events(payload, tenant=tenant)
    return json_response(SourceResult(events=await _accept(request, principal, events, "grafana")), 202)


def routes() -> list[web.RouteDef]:
    """The intake routes."""
    return [
        web.post("/api/v1/events", post_events),
        web.post("/api/v1/ingest/alertmanager", post_alertmanager),
        web.post("/api/v1/ingest/grafana", post_grafana),
    ]
