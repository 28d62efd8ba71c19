"""Reading the audit log: GET /api/v1/audit."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from bot.handlers.http import authenticate, invalid_cursor, json_response, query_model, runtime_of
from bot.handlers.openapi import documented
from core.audit import AuditEntry, list_entries
from core.config import ApiScope
from core.models.common import Strict
from core.store.pagination import decode_cursor, encode_cursor


class AuditQuery(Strict):
    approval: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    alert: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    actor: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]+$")
    type: str | None = Field(default=None, max_length=64, pattern=r"^[a-z._]+$")
    tenant: str | None = Field(default=None, max_length=100, pattern=r"^[^\x00]+$")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


@documented(
    summary="The audit log newest first, filtered by approval, alert, actor and type",
    scope=ApiScope.notify_read,
    query=AuditQuery,
    responses={200: AuditPage},
    tags=("audit",),
)
async def list_audit(request: web.Request) -> web.Response:
    """Audit rows newest first, filtered; rows about no tenant (key operations) only for all-tenant keys."""
    principal = authenticate(request, ApiScope.notify_read)
    query = query_model(AuditQuery, request)
    tenants = principal.tenants
    if query.tenant is not None:
        principal.check_tenant(query.tenant)
        tenants = [query.tenant]
    before = None
    if query.cursor is not None:
        try:
            before = int(decode_cursor(query.cursor))
        except ValueError:
            raise invalid_cursor() from None
    entries, last = await list_entries(
        db=runtime_of(request).db,
        tenants=tenants,
        approval_id=query.approval,
        alert_id=query.alert,
        actor=query.actor,
        type=query.type,
        before_seq=before,
        limit=query.limit,
    )
    return json_response(AuditPage(items=entries, next_cursor=encode_cursor(str(last)) if last is not None else None))


def routes() -> list[web.RouteDef]:
    """The audit routes."""
    return [web.get("/api/v1/audit", list_audit)]
