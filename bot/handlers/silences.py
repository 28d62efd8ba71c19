"""Silences and maintenance windows: POST/GET/DELETE /api/v1/silences."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

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
from bot.handlers.openapi import documented
from core import silences
from core.auth import Principal
from core.config import ApiScope
from core.models.common import Strict
from core.silences import Silence, SilenceError, SilenceIn


class SilenceQuery(Strict):
    state: Literal["active", "pending", "expired", "all"] = "active"
    tenant: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class SilenceOut(BaseModel):
    """A silence as the API answers it: the stored silence's fields, and its state at the time of the answer."""

    model_config = ConfigDict(extra="allow")

    id: str
    tenant: str
    state: Literal["active", "pending", "expired"]


class SilenceList(BaseModel):
    items: list[SilenceOut]


def _json(silence: Silence, request: web.Request) -> dict[str, Any]:
    now = runtime_of(request).clock.now()
    return {**silence.model_dump(mode="json"), "state": silence.state(now)}


def _tenant_for(principal: Principal, requested: str | None) -> str:
    tenant = requested or (principal.tenant if principal.tenant != "*" else "default")
    if tenant == "*" and principal.tenant != "*":
        raise ApiError(403, "only a key for every tenant may silence every tenant")
    principal.check_tenant(tenant)
    return tenant


@documented(
    summary="Silence matching alerts, or one alert, for a while",
    scope=ApiScope.notify_admin,
    body=SilenceIn,
    responses={201: SilenceOut},
    tags=("silences",),
)
async def create_silence(request: web.Request) -> web.Response:
    """POST /api/v1/silences: matchers (a rule's match) or an alert_id, and ends_at or duration."""
    principal = authenticate(request, ApiScope.notify_admin)
    spec = parse_model(SilenceIn, await read_json(request))
    tenant = _tenant_for(principal, spec.tenant)
    runtime = runtime_of(request)
    try:
        silence = await silences.create_silence(db=runtime.db, spec=spec, tenant=tenant, now=runtime.clock.now())
    except SilenceError as exc:
        raise ApiError(422, "invalid silence", errors=[{"field": exc.field, "message": str(exc)}]) from None
    return json_response(_json(silence, request), status=201)


@documented(
    summary="Silences ending soonest first",
    scope=ApiScope.notify_read,
    query=SilenceQuery,
    responses={200: SilenceList},
    tags=("silences",),
)
async def list_silences(request: web.Request) -> web.Response:
    """GET /api/v1/silences?state=active|pending|expired|all: the ones ending soonest first."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(SilenceQuery, request)
    tenants = principal.tenants
    if query.tenant is not None:
        principal.check_tenant(query.tenant)
        tenants = [query.tenant]
    runtime = runtime_of(request)
    found = await silences.list_silences(
        db=runtime.db, tenants=tenants, state=query.state, now=runtime.clock.now(), limit=query.limit
    )
    return json_response({"items": [_json(silence, request) for silence in found]})


async def _load(request: web.Request, principal: Principal) -> Silence:
    silence = await silences.get_silence(db=runtime_of(request).db, silence_id=request.match_info["silence_id"])
    if silence is None:
        raise ApiError(404, "no such silence")
    hide_unless_visible(principal, silence.tenant, "no such silence")
    return silence


@documented(summary="One silence", scope=ApiScope.notify_read, responses={200: SilenceOut}, tags=("silences",))
async def get_silence(request: web.Request) -> web.Response:
    """GET /api/v1/silences/{id}."""
    principal = authenticate(request, ApiScope.notify_read)
    return json_response(_json(await _load(request, principal), request))


@documented(summary="End a silence now", scope=ApiScope.notify_admin, responses={204: None}, tags=("silences",))
async def delete_silence(request: web.Request) -> web.Response:
    """DELETE /api/v1/silences/{id}: end it now (it stays listed as expired)."""
    principal = authenticate(request, ApiScope.notify_admin)
    silence = await _load(request, principal)
    if silence.tenant == "*" and principal.tenant != "*":
        raise ApiError(403, "only a key for every tenant may end a silence of every tenant")
    runtime = runtime_of(request)
    await silences.end_silence(db=runtime.db, silence_id=silence.id, now=runtime.clock.now())
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    """The silence routes."""
    return [
        web.post("/api/v1/silences", create_silence),
        web.get("/api/v1/silences", list_silences),
        web.get("/api/v1/silences/{silence_id}", get_silence),
        web.delete("/api/v1/silences/{silence_id}", delete_silence),
    ]
