"""Approvals over HTTP: open, read (with a long poll), list, cancel, and decide on behalf of an integration."""

from __future__ import annotations

import re
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from bot.handlers.http import (
    ApiError,
    authenticate,
    hide_unless_visible,
    invalid_cursor,
    json_response,
    parse_model,
    query_model,
    read_json,
    runtime_of,
)
from bot.handlers.openapi import ErrorBody, documented
from core.approvals import ApprovalInputError, ApprovalRequest, DecisionResult
from core.approvals.models import ApprovalDocument, ApprovalView
from core.approvals.waiters import MAX_WAIT_SECONDS
from core.auth import Principal
from core.config import ApiScope
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.common import Strict
from core.models.people import Actor
from core.store.pagination import encode_cursor

APPROVAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ApprovalQuery(Strict):
    state: ApprovalState | None = None
    tenant: str | None = Field(default=None, max_length=100, pattern=r"^[^\x00]+$")
    alert_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class WaitQuery(Strict):
    wait: float = Field(default=0, ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a decision")


class ActorIn(Strict):
    platform: Literal["slack", "teams", "web", "api"]
    id: str = Field(min_length=1, max_length=200)
    display_name: str = Field(default="", max_length=200)


class DecisionIn(Strict):
    """A click relayed by an integration: the actor the platform vouched for, and a token or a choice."""

    actor: ActorIn
    token: str | None = Field(default=None, min_length=1, max_length=2000)
    choice: Choice | None = None

    @model_validator(mode="after")
    def _token_or_choice(self) -> DecisionIn:
        if self.token is None and self.choice is None:
            raise ValueError("send a token, or a choice to decide by approval id")
        return self


class ApprovalPage(BaseModel):
    items: list[Approval]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class Refusal(DecisionResult):
    """A refused decision: the result, and the API's usual error object beside it."""

    error: dict[str, Any] = Field(description="{status, message}, as in every error answer")


# A refused decision answers with the status that fits its reason; its body is a Refusal (an error body too).
REFUSALS: dict[int, Any] = {status: Refusal | ErrorBody for status in (400, 403, 404, 409, 410)}


def input_error(exc: ApprovalInputError) -> ApiError:
    """A refused request as a 422 naming the field."""
    return ApiError(422, "invalid request", errors=[{"field": exc.field, "message": exc.message}])


def result_response(result: DecisionResult) -> web.Response:
    """A decision's answer: the result, with the status that fits its reason (and an error object if refused)."""
    body = result.model_dump(mode="json")
    status = result.http_status
    if status >= 400:
        body["error"] = {"status": status, "message": result.message}
    return json_response(body, status=status)


def _tenant_for(principal: Principal, requested: str | None) -> str:
    tenant = requested or (principal.tenant if principal.tenant != "*" else "default")
    principal.check_tenant(tenant)
    return tenant


async def _visible(request: web.Request, principal: Principal, approval_id: str) -> ApprovalView:
    # Ids are ours: anything else is unknown, and never reaches the database (PostgreSQL refuses NUL bytes).
    view = await runtime_of(request).approvals.view(approval_id=approval_id) if APPROVAL_ID.match(approval_id) else None
    if view is None:
        raise ApiError(404, "no such approval")
    hide_unless_visible(principal, view.approval.tenant, "no such approval")
    return view


@documented(
    summary="Open an approval: one message per target, committed before the answer",
    scope=ApiScope.events_write,
    body=ApprovalRequest,
    responses={201: ApprovalDocument},
    tags=("approvals",),
)
async def create_approval(request: web.Request) -> web.Response:
    """POST /api/v1/approvals: 201 with the approval, once it and its messages are committed."""
    principal = authenticate(request, ApiScope.events_write)
    body = parse_model(ApprovalRequest, await read_json(request))
    tenant = _tenant_for(principal, body.tenant)
    try:
        approval = await runtime_of(request).approvals.create(request=body, tenant=tenant, created_by=principal.name)
    except ApprovalInputError as exc:
        raise input_error(exc) from None
    view = await runtime_of(request).approvals.view(approval_id=approval.id)
    response = json_response(view.document() if view else approval, status=201)
    response.headers["Location"] = f"/api/v1/approvals/{approval.id}"
    return response


@documented(
    summary="One approval; with wait, answers as soon as it is decided (at most 60 s)",
    scope=ApiScope.notify_read,
    query=WaitQuery,
    responses={200: ApprovalDocument},
    tags=("approvals",),
)
async def get_approval(request: web.Request) -> web.Response:
    """GET /api/v1/approvals/{id}[?wait=SECONDS]: with wait, answers as soon as it is decided (at most 60 s)."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(WaitQuery, request)
    approval_id = request.match_info["approval_id"]
    if not APPROVAL_ID.match(approval_id):
        raise ApiError(404, "no such approval")
    # One read, checked against the caller's tenants before anything is waited for.
    view = await runtime_of(request).approvals.wait(
        approval_id=approval_id,
        seconds=query.wait,
        check=lambda first: hide_unless_visible(principal, first.approval.tenant, "no such approval"),
    )
    if view is None:
        raise ApiError(404, "no such approval")
    return json_response(view.document())


@documented(
    summary="Approvals newest first, filtered and paginated",
    scope=ApiScope.notify_read,
    query=ApprovalQuery,
    responses={200: ApprovalPage},
    tags=("approvals",),
)
async def list_approvals(request: web.Request) -> web.Response:
    """GET /api/v1/approvals: newest first, filtered by state, tenant and alert, paginated with a cursor."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(ApprovalQuery, request)
    tenants = principal.tenants
    if query.tenant is not None:
        principal.check_tenant(query.tenant)
        tenants = [query.tenant]
    try:
        page, last = await runtime_of(request).approvals.list_approvals(
            tenants=tenants,
            states=[query.state] if query.state else None,
            alert_id=query.alert_id,
            limit=query.limit,
            cursor=query.cursor,
        )
    except ValueError:
        raise invalid_cursor() from None
    return json_response(ApprovalPage(items=page, next_cursor=encode_cursor(last) if last else None))


@documented(
    summary="Withdraw an open approval",
    scope=ApiScope.events_write,
    responses={200: DecisionResult, **REFUSALS},
    tags=("approvals",),
)
async def cancel_approval(request: web.Request) -> web.Response:
    """POST /api/v1/approvals/{id}/cancel: withdraw an open approval (409 once it is decided)."""
    principal = authenticate(request, ApiScope.events_write)
    approval_id = request.match_info["approval_id"]
    view = await _visible(request, principal, approval_id)
    result = await runtime_of(request).approvals.cancel(
        approval_id=approval_id, by=principal.name, tenant=view.approval.tenant
    )
    return result_response(result)


@documented(
    summary="Relay a click (actor and token) or a command (actor and choice) from an integration",
    scope=ApiScope.notify_admin,
    body=DecisionIn,
    responses={200: DecisionResult, **REFUSALS},
    tags=("approvals",),
)
async def post_decision(request: web.Request) -> web.Response:
    """POST /api/v1/approvals/{id}/decisions: an integration relays a click (token) or a command (choice)."""
    principal = authenticate(request, ApiScope.notify_admin)
    approval_id = request.match_info["approval_id"]
    view = await _visible(request, principal, approval_id)
    body = parse_model(DecisionIn, await read_json(request))
    actor = Actor.model_validate(body.actor.model_dump())
    approvals = runtime_of(request).approvals
    if body.token is not None:
        claims = approvals.keys.authenticated_claims(body.token)
        if claims is not None and claims.approval_id != approval_id:
            raise ApiError(422, "invalid request", errors=[{"field": "token", "message": "for another approval"}])
        result = await approvals.decide(
            token=body.token,
            actor=actor,
            choice=body.choice.value if body.choice else None,
            tenant=view.approval.tenant,
        )
    else:
        assert body.choice is not None  # the model validator guarantees a token or a choice
        result = await approvals.decide_by_id(
            approval_id=approval_id, choice=body.choice, actor=actor, tenant=view.approval.tenant
        )
    return result_response(result)


def routes() -> list[web.RouteDef]:
    """The approval routes."""
    return [
        web.post("/api/v1/approvals", create_approval),
        web.get("/api/v1/approvals", list_approvals),
        web.get("/api/v1/approvals/{approval_id}", get_approval),
        web.post("/api/v1/approvals/{approval_id}/cancel", cancel_approval),
        web.post("/api/v1/approvals/{approval_id}/decisions", post_decision),
    ]
