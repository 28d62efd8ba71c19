"""Ack tokens over HTTP: the public keys for outside verifiers, and issue / verify for integrations."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from bot.handlers.approvals import input_error
from bot.handlers.http import ApiError, authenticate, json_response, parse_model, read_json, runtime_of
from bot.handlers.openapi import ErrorBody, documented
from core.approvals import ApprovalInputError
from core.approvals.models import bounded_duration
from core.config import ApiScope
from core.models.approvals import Choice
from core.models.common import Duration, Strict, UtcDatetime
from core.tokens import TokenClaims


class TokenIssueIn(Strict):
    approval_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    channel: str = Field(default="api", min_length=1, max_length=100)
    choice: Choice
    delivery_id: str | None = Field(default=None, min_length=1, max_length=128)
    subject: str | None = Field(default=None, min_length=1, max_length=100, description="the person it is for")
    ttl: Duration | None = None

    @field_validator("ttl", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        return bounded_duration(value)


class TokenVerifyIn(Strict):
    token: str = Field(min_length=1, max_length=4000)
    tenant: str | None = Field(default=None, min_length=1, max_length=100)
    choice: Choice | None = None


class TokenClaimsOut(BaseModel):
    """What a token says, with readable names; iat and exp also as times."""

    tenant: str
    approval_id: str
    delivery_id: str | None = None
    channel: str
    choice: str
    subject: str | None = None
    nonce: str
    iat: int
    exp: int
    kid: str
    issued_at: UtcDatetime
    expires_at: UtcDatetime


class IssuedToken(BaseModel):
    token: str
    url: str = Field(description="the web ack page for the token")
    claims: TokenClaimsOut


class TokenVerdict(BaseModel):
    valid: bool
    reason: str | None = Field(description="why the token is refused (the decision reasons); null when valid")
    spent: bool = Field(description="whether its nonce was used already")
    claims: TokenClaimsOut | None = None


class TokenPublicKeys(BaseModel):
    mode: str
    keys: list[dict[str, str]] = Field(description="kid, alg, name, public_key_pem, public_key (DSSE); none for HMAC")


def claims_document(claims: TokenClaims) -> TokenClaimsOut:
    """The claims with readable names, and iat/exp also as times."""
    return TokenClaimsOut(**claims.model_dump(by_alias=False), issued_at=claims.issued_at, expires_at=claims.expires_at)


@documented(
    summary="The public keys that verify DSSE ack tokens (none in HMAC mode); no secrets",
    scope=None,
    responses={200: TokenPublicKeys},
    tags=("ack tokens",),
)
async def public_keys(request: web.Request) -> web.Response:
    """GET /api/v1/ack-tokens/keys: the public keys that verify DSSE tokens (none in HMAC mode). No secrets."""
    codec = runtime_of(request).approvals.keys.codec
    response = json_response(TokenPublicKeys(mode=codec.mode, keys=codec.public_keys()))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@documented(
    summary="Issue one ack token for an open approval",
    scope=ApiScope.notify_admin,
    body=TokenIssueIn,
    responses={201: IssuedToken, 404: ErrorBody},
    tags=("ack tokens",),
)
async def issue(request: web.Request) -> web.Response:
    """POST /api/v1/ack-tokens/issue: one token for an open approval (notify.admin)."""
    principal = authenticate(request, ApiScope.notify_admin)
    body = parse_model(TokenIssueIn, await read_json(request))
    approvals = runtime_of(request).approvals
    approval = await approvals.get(approval_id=body.approval_id)
    if approval is None:
        raise ApiError(404, "no such approval", errors=[{"field": "approval_id", "message": "no such approval"}])
    if not principal.sees(approval.tenant):
        raise ApiError(404, "no such approval", errors=[{"field": "approval_id", "message": "no such approval"}])
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
    return json_response(IssuedToken(token=token, url=url, claims=claims_document(claims)), status=201)


@documented(
    summary="Check an ack token without spending it",
    scope=ApiScope.notify_admin,
    body=TokenVerifyIn,
    responses={200: TokenVerdict},
    tags=("ack tokens",),
)
async def verify(request: web.Request) -> web.Response:
    """POST /api/v1/ack-tokens/verify: is this token good (and unspent)? Never spends it (notify.admin)."""
    principal = authenticate(request, ApiScope.notify_admin)
    body = parse_model(TokenVerifyIn, await read_json(request))
    tenant = body.tenant
    if tenant is not None:
        principal.check_tenant(tenant)
    elif principal.tenant != "*":
        tenant = principal.tenant  # a tenant's key learns nothing about another tenant's tokens
    claims, reason, spent = await runtime_of(request).approvals.verify_token(
        token=body.token, tenant=tenant, choice=body.choice.value if body.choice else None
    )
    return json_response(
        TokenVerdict(
            valid=reason is None,
            reason=reason.value if reason else None,
            spent=spent,
            claims=claims_document(claims) if claims is not None else None,
        )
    )


def routes() -> list[web.RouteDef]:
    """The ack-token routes."""
    return [
        web.get("/api/v1/ack-tokens/keys", public_keys),
        web.post("/api/v1/ack-tokens/issue", issue),
        web.post("/api/v1/ack-tokens/verify", verify),
    ]
