"""Ack tokens over HTTP: the public keys for outside verifiers, and issue / verify for integrations."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from bot.handlers.approvals import input_error
from bot.handlers.http import ApiError, authenticate, json_response, parse_model, read_json, runtime_of
from core.approvals import ApprovalInputError
from core.config import ApiScope
from core.models import Choice, Duration, Strict
from core.tokens import TokenClaims


class IssueIn(Strict):
    approval_id: str = Field(min_length=1, max_length=128)
    channel: str = Field(default="api", min_length=1, max_length=100)
    choice: Choice
    delivery_id: str | None = Field(default=None, min_length=1, max_length=128)
    subject: str | None = Field(default=None, min_length=1, max_length=100, description="the person it is for")
    ttl: Duration | None = None


class VerifyIn(Strict):
    token: str = Field(min_length=1, max_length=4000)
    tenant: str | None = Field(default=None, min_length=1, max_length=100)
    choice: Choice | None = None


def claims_document(claims: TokenClaims) -> dict[str, Any]:
    """The claims with readable names, and iat/exp also as ISO times."""
    data = claims.model_dump(by_alias=False)
    data["issued_at"] = claims.issued_at.isoformat()
    data["expires_at"] = claims.expires_at.isoformat()
    return data


async def public_keys(request: web.Request) -> web.Response:
    """GET /api/v1/ack-tokens/keys: the public keys that verify DSSE tokens (none in HMAC mode). No secrets."""
    codec = runtime_of(request).approvals.keys.codec
    response = json_response({"mode": codec.mode, "keys": codec.public_keys()})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def issue(request: web.Request) -> web.Response:
    """POST /api/v1/ack-tokens/issue: one token for an open approval (notify.admin)."""
    principal = authenticate(request, ApiScope.notify_admin)
    body = parse_model(IssueIn, await read_json(request))
    approvals = runtime_of(request).approvals
    approval = await approvals.get(approval_id=body.approval_id)
    if approval is None:
        raise ApiError(404, "no such approval", errors=[{"field": "approval_id", "message": "no such approval"}])
    principal.check_tenant(approval.tenant)
    try:
        token, claims = await approvals.issue_token(
            approval_id=body.approval_id,
            channel=body.channel,
            choice=body.choice,
            by=principal.name,
            delivery_id=body.delivery_id,
            subject=body.subject,
            ttl=body.ttl,
        )
    except ApprovalInputError as exc:
        raise input_error(exc) from None
    url = f"{runtime_of(request).public_url}/ack/{token}"
    return json_response({"token": token, "url": url, "claims": claims_document(claims)}, status=201)


async def verify(request: web.Request) -> web.Response:
    """POST /api/v1/ack-tokens/verify: is this token good (and unspent)? Never spends it (notify.admin)."""
    principal = authenticate(request, ApiScope.notify_admin)
    body = parse_model(VerifyIn, await read_json(request))
    tenant = body.tenant
    if tenant is not None:
        principal.check_tenant(tenant)
    elif principal.tenant != "*":
        tenant = principal.tenant  # a tenant's key learns nothing about another tenant's tokens
    claims, reason, spent = await runtime_of(request).approvals.verify_token(
        token=body.token, tenant=tenant, choice=body.choice.value if body.choice else None
    )
    return json_response(
        {
            "valid": reason is None,
            "reason": reason.value if reason else None,
            "spent": spent,
            "claims": claims_document(claims) if claims is not None else None,
        }
    )


def routes() -> list[web.RouteDef]:
    """The ack-token routes."""
    return [
        web.get("/api/v1/ack-tokens/keys", public_keys),
        web.post("/api/v1/ack-tokens/issue", issue),
        web.post("/api/v1/ack-tokens/verify", verify),
    ]
