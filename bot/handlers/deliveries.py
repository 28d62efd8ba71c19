"""The delivery ledger: list, inspect (with every attempt) and retry by hand."""

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
from core import deliveries
from core.config import ApiScope
from core.models.common import Strict
from core.models.deliveries import Delivery, DeliveryAttempt, DeliveryStatus
from core.store.pagination import encode_cursor


class DeliveryQuery(Strict):
    status: DeliveryStatus | None = None
    channel: str | None = None
    event: str | None = None
    alert: str | None = None
    approval: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None


class DeliveryDetail(Delivery):
    history: list[DeliveryAttempt] = Field(description="every attempt, oldest first")


@documented(
    summary="Deliveries newest first, filtered and paginated",
    scope=ApiScope.notify_read,
    query=DeliveryQuery,
    responses={200: DeliveryPage},
    tags=("deliveries",),
)
async def list_deliveries(request: web.Request) -> web.Response:
    """GET /api/v1/deliveries: newest first, filtered, paginated."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(DeliveryQuery, request)
    try:
        page, last = await deliveries.list_deliveries(
            db=runtime_of(request).db,
            tenants=principal.tenants,
            status=query.status,
            channel=query.channel,
            event_id=query.event,
            alert_id=query.alert,
            approval_id=query.approval,
            limit=query.limit,
            cursor=query.cursor,
        )
    except ValueError:
        raise invalid_cursor() from None
    return json_response(DeliveryPage(items=page, next_cursor=encode_cursor(last) if last else None))


@documented(
    summary="One delivery with every attempt",
    scope=ApiScope.notify_read,
    responses={200: DeliveryDetail},
    tags=("deliveries",),
)
async def get_delivery(request: web.Request) -> web.Response:
    """GET /api/v1/deliveries/{id}: the delivery and every attempt (errors never carry secrets)."""
    principal = authenticate(request, ApiScope.notify_read)
    delivery_id = request.match_info["delivery_id"]
    found = await deliveries.with_attempts(db=runtime_of(request).db, delivery_id=delivery_id)
    if found is None:
        raise ApiError(404, "no such delivery")
    delivery, attempts = found
    hide_unless_visible(principal, delivery.tenant, "no such delivery")
    return json_response(DeliveryDetail(**delivery.model_dump(), history=attempts))


@documented(
    summary="Queue a dead or failing delivery again, now",
    scope=ApiScope.notify_admin,
    responses={202: Delivery, 409: "the delivery is neither dead nor failed"},
    tags=("deliveries",),
)
async def retry_delivery(request: web.Request) -> web.Response:
    """POST /api/v1/deliveries/{id}/retry: put a dead or failing delivery back in the queue now."""
    principal = authenticate(request, ApiScope.notify_admin)
    runtime = runtime_of(request)
    delivery_id = request.match_info["delivery_id"]
    retry = await deliveries.retry_dead(
        db=runtime.db,
        delivery_id=delivery_id,
        now=runtime.clock.now(),
        check=lambda delivery: hide_unless_visible(principal, delivery.tenant, "no such delivery"),
    )
    if retry.found is None:
        raise ApiError(404, "no such delivery")
    if not retry.queued:
        raise ApiError(409, f"delivery is {retry.found.status}; only dead or failed deliveries can be retried")
    if runtime.dispatcher is not None:
        runtime.dispatcher.wake()
    updated = await deliveries.get_delivery(db=runtime.db, delivery_id=delivery_id)
    return json_response(updated, status=202)


def routes() -> list[web.RouteDef]:
    """The delivery routes."""
    return [
        web.get("/api/v1/deliveries", list_deliveries),
        web.get("/api/v1/deliveries/{delivery_id}", get_delivery),
        web.post("/api/v1/deliveries/{delivery_id}/retry", retry_delivery),
    ]
