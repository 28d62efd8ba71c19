"""Channels through the API: list, create, change, delete, send a test, and health."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.handlers.crud import NamedItems
from bot.handlers.http import ApiError, authenticate, json_response, runtime_of, validation_errors
from bot.handlers.openapi import documented
from core.auth import ALL_TENANTS, Principal
from core.commands import (
    UnknownChannel,
    all_channel_health,
    channel_health,
    put_channel,
    remove_channel,
    send_test,
)
from core.config import ApiScope, ChannelConfig, format_loc
from core.runtime import Runtime
from core.secrets import references_in


class ChannelView(BaseModel):
    name: str
    type: str
    tenant: str
    enabled: bool
    settings: dict[str, Any]
    origin: Literal["config", "api"]
    in_service: bool


class ChannelPage(BaseModel):
    items: list[ChannelView]


class TestOutcomeView(BaseModel):
    channel: str
    delivery_id: str
    ok: bool
    status_code: int | None
    error: str | None
    message_ref: dict[str, Any] | None


class HealthView(BaseModel):
    channel: str
    healthy: bool
    last_success: str | None
    last_failure: str | None
    last_error: str | None
    consecutive_failures: int
    dead: int
    pending: int


class HealthPage(BaseModel):
    items: list[HealthView]


def _describe(request: web.Request, config: ChannelConfig) -> ChannelView:
    runtime = runtime_of(request)
    # Settings hold secret references, never secrets, so they are safe to show.
    return ChannelView(
        name=config.name,
        type=config.type,
        tenant=config.tenant,
        enabled=config.enabled,
        settings=config.settings,
        origin="config" if config.name in runtime.config_channel_names else "api",
        in_service=config.name in runtime.channels,
    )


class Channels(NamedItems[ChannelConfig]):
    """Channels made through the API; the runtime builds them into senders on every replica."""

    noun = "channel"
    model = ChannelConfig
    # A channel's tenant is fixed: rules of that tenant (or, shared, of every tenant) were checked against it.
    fixed = ("name", "type", "tenant")

    async def refresh(self, runtime: Runtime, *, force: bool = False) -> None:
        await runtime.refresh_channels(force=force)

    def in_force(self, runtime: Runtime, name: str) -> ChannelConfig | None:
        return runtime.channel_configs.get(name)

    def defaults(self, principal: Principal) -> dict[str, Any]:
        # A tenant's key makes its tenant's channels; a key for every tenant makes shared ones unless told otherwise.
        return {"tenant": principal.tenant}

    def from_config(self, runtime: Runtime, name: str) -> bool:
        return name in runtime.config_channel_names

    async def current(self, runtime: Runtime, name: str) -> ChannelConfig | None:
        return runtime.channel_configs.get(name)

    def check(self, request: web.Request, principal: Principal, item: ChannelConfig) -> None:
        if not principal.manages(item.tenant):
            shared = item.tenant == ALL_TENANTS
            message = "only a key for every tenant may make a shared channel" if shared else "another tenant"
            raise ApiError(403, f"this API key is for tenant {principal.tenant!r}: {message}")
        registry = runtime_of(request).registry
        if item.type not in registry.types():
            known = ", ".join(sorted(registry.types()))
            errors = [{"field": "type", "message": f"unknown type (known: {known})"}]
            raise ApiError(422, "invalid channel", errors=errors)
        try:
            registry.validate_settings(item.type, item.settings)
        except ValidationError as exc:
            raise ApiError(422, "invalid channel", errors=validation_errors(exc, ("settings",))) from None
        policy = runtime_of(request).config.secrets.policy()
        refused = [
            {"field": format_loc(("settings", *where)), "message": reason}
            for where, reference in references_in(item.settings)
            if (reason := policy.refusal(reference)) is not None
        ]
        if refused:
            raise ApiError(422, "invalid channel", errors=refused)

    async def put(self, runtime: Runtime, item: ChannelConfig, now: datetime) -> None:
        await put_channel(db=runtime.db, channel=item, now=now)

    async def remove(self, runtime: Runtime, name: str) -> None:
        await remove_channel(db=runtime.db, name=name)

    def view(self, request: web.Request, item: ChannelConfig) -> ChannelView:
        return _describe(request, item)

    def merge(self, current: ChannelConfig, changes: dict[str, Any]) -> dict[str, Any]:
        """Settings are merged key by key, so a PATCH can change one setting."""
        merged = current.model_dump()
        if "settings" in changes:
            if not isinstance(changes["settings"], dict):
                raise ApiError(422, "invalid request", errors=[{"field": "settings", "message": "expected an object"}])
            merged["settings"] = {**current.settings, **changes["settings"]}
        merged.update({key: value for key, value in changes.items() if key != "settings"})
        return merged


CHANNELS = Channels()


def _known(request: web.Request, principal: Principal, name: str) -> ChannelConfig:
    """The channel of this name, if the key sees it (its tenant's, or shared); 404 as for no channel otherwise."""
    config = runtime_of(request).channel_configs.get(name)
    if config is None or not principal.sees(config.tenant):
        raise ApiError(404, f"no channel named {name!r}")
    return config


@documented(summary="Every channel", scope=ApiScope.notify_read, responses={200: ChannelPage}, tags=("channels",))
async def list_channels(request: web.Request) -> web.Response:
    """GET /api/v1/channels."""
    principal = authenticate(request, ApiScope.notify_read)
    runtime = runtime_of(request)
    await runtime.refresh_channels()
    seen = [c for _, c in sorted(runtime.channel_configs.items()) if principal.sees(c.tenant)]
    return json_response(ChannelPage(items=[_describe(request, c) for c in seen]))


@documented(summary="One channel", scope=ApiScope.notify_read, responses={200: ChannelView}, tags=("channels",))
async def get_channel(request: web.Request) -> web.Response:
    """GET /api/v1/channels/{name}."""
    principal = authenticate(request, ApiScope.notify_read)
    await runtime_of(request).refresh_channels()
    return json_response(_describe(request, _known(request, principal, request.match_info["name"])))


@documented(
    summary="Create a channel, in service at once on every replica",
    scope=ApiScope.notify_admin,
    body=ChannelConfig,
    responses={201: ChannelView, 409: "a channel of that name exists"},
    tags=("channels",),
)
async def create_channel(request: web.Request) -> web.Response:
    """POST /api/v1/channels: a new channel, in service at once on every replica."""
    return await CHANNELS.create(request)


@documented(
    summary="Change an API channel (settings are merged key by key)",
    scope=ApiScope.notify_admin,
    body=dict[str, Any],
    responses={200: ChannelView, 409: "the channel comes from the config file"},
    tags=("channels",),
)
async def patch_channel(request: web.Request) -> web.Response:
    """PATCH /api/v1/channels/{name}: change enabled or settings (settings are merged key by key)."""
    return await CHANNELS.patch(request)


@documented(
    summary="Delete an API channel",
    scope=ApiScope.notify_admin,
    responses={204: None, 409: "the channel comes from the config file"},
    tags=("channels",),
)
async def delete_channel(request: web.Request) -> web.Response:
    """DELETE /api/v1/channels/{name}; its pending deliveries dead-letter with a clear reason."""
    return await CHANNELS.delete(request)


@documented(
    summary="Send a real test notification; the outcome or the receiver's error",
    scope=ApiScope.notify_admin,
    responses={200: TestOutcomeView, 409: "the channel is not in service"},
    tags=("channels",),
)
async def test_channel(request: web.Request) -> web.Response:
    """POST /api/v1/channels/{name}/test: send a real test notification; 200 with the outcome either way."""
    principal = authenticate(request, ApiScope.notify_admin)
    runtime = runtime_of(request)
    await runtime.refresh_channels()
    name = request.match_info["name"]
    channel = _known(request, principal, name)
    # A test goes out as the key's tenant; a key for every tenant tests a tenant's channel as that tenant.
    tenant = principal.tenant if principal.tenant != ALL_TENANTS else channel.tenant
    tenant = tenant if tenant != ALL_TENANTS else "default"
    try:
        outcome = await send_test(runtime=runtime, channel=name, tenant=tenant, requested_by=principal.name)
    except UnknownChannel:
        raise ApiError(409, f"channel {name!r} is not in service (disabled, or its settings do not build)") from None
    return json_response(TestOutcomeView(**outcome.as_dict()), status=200)


@documented(summary="A channel's health", scope=ApiScope.notify_read, responses={200: HealthView}, tags=("channels",))
async def get_health(request: web.Request) -> web.Response:
    """GET /api/v1/channels/{name}/health."""
    principal = authenticate(request, ApiScope.notify_read)
    name = request.match_info["name"]
    _known(request, principal, name)
    try:
        health = await channel_health(runtime=runtime_of(request), channel=name)
    except UnknownChannel:
        raise ApiError(404, f"no channel named {name!r}") from None
    return json_response(HealthView(**health.as_dict()))


@documented(
    summary="Health of every channel in service",
    scope=ApiScope.notify_read,
    responses={200: HealthPage},
    tags=("channels",),
)
async def list_health(request: web.Request) -> web.Response:
    """GET /api/v1/channels/health: every channel in service."""
    principal = authenticate(request, ApiScope.notify_read)
    runtime = runtime_of(request)
    seen = {name for name, c in runtime.channel_configs.items() if principal.sees(c.tenant)}
    items = [HealthView(**h.as_dict()) for h in await all_channel_health(runtime=runtime) if h.channel in seen]
    return json_response(HealthPage(items=items))


def routes() -> list[web.RouteDef]:
    """The channel routes."""
    return [
        web.get("/api/v1/channels", list_channels),
        web.post("/api/v1/channels", create_channel),
        web.get("/api/v1/channels/health", list_health),
        web.get("/api/v1/channels/{name}", get_channel),
        web.patch("/api/v1/channels/{name}", patch_channel),
        web.delete("/api/v1/channels/{name}", delete_channel),
        web.post("/api/v1/channels/{name}/test", test_channel),
        web.get("/api/v1/channels/{name}/health", get_health),
    ]
