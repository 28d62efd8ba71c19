"""Create, change and delete through the API what the config file can also define (channels, rules).

Items are named. Those of the config file are read-only here (409: change them there); those made through the API
are stored, and every replica puts a change in force when it next refreshes. Each kind says how it is stored, what
it checks beyond its model, and how it is shown; the HTTP flow is this one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, Generic, TypeVar

from aiohttp import web

from bot.handlers.http import (
    ApiError,
    authenticate,
    hide_unless_visible,
    json_response,
    parse_model,
    read_json,
    runtime_of,
)
from core.auth import Principal
from core.config import ApiScope, ChannelConfig
from core.models.rules import Rule
from core.runtime import Runtime

T = TypeVar("T", ChannelConfig, Rule)


class NamedItems(ABC, Generic[T]):
    """One kind of named item the API manages beside the config file's."""

    noun: str
    model: type[T]
    # Fields a PATCH may repeat but not change.
    fixed: tuple[str, ...] = ("name",)

    @abstractmethod
    async def refresh(self, runtime: Runtime, *, force: bool = False) -> None:
        """Put the stored items in force on this replica (force: even if nothing seems changed)."""

    @abstractmethod
    def in_force(self, runtime: Runtime, name: str) -> T | None:
        """The item of this name in force, from the config file or the API."""

    def exists(self, runtime: Runtime, name: str) -> bool:
        """Whether an item of this name is in force, from the config file or the API."""
        return self.in_force(runtime, name) is not None

    def hide_from(self, principal: Principal, item: T) -> None:
        """404, as for an unknown name, for an item of a tenant the key does not see (items with a tenant)."""
        tenant = getattr(item, "tenant", None)
        if tenant is not None:
            hide_unless_visible(principal, tenant, f"no {self.noun} named {item.name!r}")

    def defaults(self, principal: Principal) -> dict[str, Any]:
        """Fields a POST that leaves them out gets from the key (a tenant's key makes its tenant's items)."""
        return {}

    @abstractmethod
    def from_config(self, runtime: Runtime, name: str) -> bool:
        """Whether the config file defines the item of this name."""

    @abstractmethod
    async def current(self, runtime: Runtime, name: str) -> T | None:
        """The API-made item of this name."""

    def check_access(self, principal: Principal, item: T) -> None:
        """Raise ApiError (or ForbiddenError) unless this key may change or delete the item as it is (it sees it)."""
        tenant = getattr(item, "tenant", None)
        if tenant is not None and not principal.manages(tenant):
            raise ApiError(
                403, f"{self.noun} {item.name!r} is shared by every tenant: only a key for every tenant may change it"
            )

    @abstractmethod
    def check(self, request: web.Request, principal: Principal, item: T) -> None:
        """Raise ApiError (or ForbiddenError) unless the item may be stored: what its model alone cannot check."""

    @abstractmethod
    async def put(self, runtime: Runtime, item: T, now: datetime) -> None:
        """Store the item, new or changed (a core function, in a transaction of its own)."""

    @abstractmethod
    async def remove(self, runtime: Runtime, name: str) -> None:
        """Delete the stored item (a core function, in a transaction of its own)."""

    @abstractmethod
    def view(self, request: web.Request, item: T) -> Any:
        """What the API answers about a stored item."""

    def merge(self, current: T, changes: dict[str, Any]) -> dict[str, Any]:
        """The item with a PATCH's top-level fields applied, to be validated again."""
        return {**current.model_dump(mode="json"), **changes}

    async def _save(self, request: web.Request, principal: Principal, item: T, *, status: int) -> web.Response:
        runtime = runtime_of(request)
        self.check(request, principal, item)
        await self.put(runtime, item, runtime.clock.now())
        await self.refresh(runtime, force=True)
        return json_response(self.view(request, item), status=status)

    async def _addressed(self, request: web.Request, *, fix: str) -> tuple[Principal, Runtime, str]:
        """The admin key, the runtime and the name in the path; 404 for an item the key does not see, 409 for an
        item of the config file."""
        principal = authenticate(request, ApiScope.notify_admin)
        runtime = runtime_of(request)
        name = request.match_info["name"]
        await self.refresh(runtime)
        found = self.in_force(runtime, name)
        if found is not None:
            self.hide_from(principal, found)
        if self.from_config(runtime, name):
            raise ApiError(409, f"{self.noun} {name!r} comes from the config file; {fix} it there")
        return principal, runtime, name

    async def _known(self, runtime: Runtime, name: str) -> T:
        item = await self.current(runtime, name)
        if item is None:
            raise ApiError(404, f"no {self.noun} named {name!r}")
        return item

    async def create(self, request: web.Request) -> web.Response:
        """POST: a new item; 409 if the name is taken."""
        principal = authenticate(request, ApiScope.notify_admin)
        body = await read_json(request)
        if isinstance(body, dict):
            body = {**self.defaults(principal), **body}
        item = parse_model(self.model, body)
        runtime = runtime_of(request)
        await self.refresh(runtime)
        if self.exists(runtime, item.name):
            raise ApiError(409, f"a {self.noun} named {item.name!r} exists; PATCH it instead")
        return await self._save(request, principal, item, status=201)

    async def patch(self, request: web.Request) -> web.Response:
        """PATCH {name}: apply the given fields to an API-made item."""
        principal, runtime, name = await self._addressed(request, fix="change")
        changes = await read_json(request)
        if not isinstance(changes, dict):
            raise ApiError(422, "invalid request", errors=[{"field": "(body)", "message": "expected a JSON object"}])
        current = await self._known(runtime, name)
        for field in self.fixed:
            if field in changes and changes[field] != getattr(current, field):
                raise ApiError(422, "invalid request", errors=[{"field": field, "message": "cannot be changed"}])
        self.check_access(principal, current)
        item = parse_model(self.model, self.merge(current, changes))
        return await self._save(request, principal, item, status=200)

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE {name}: remove an API-made item from every replica."""
        principal, runtime, name = await self._addressed(request, fix="remove")
        self.check_access(principal, await self._known(runtime, name))
        await self.remove(runtime, name)
        await self.refresh(runtime, force=True)
        return web.Response(status=204)
