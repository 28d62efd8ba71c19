"""Rules through the API, and the dry run that explains what an event would do."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from bot.handlers.crud import NamedItems
from bot.handlers.http import ApiError, authenticate, json_response, parse_model, read_json, runtime_of
from bot.handlers.openapi import documented
from core.auth import Principal
from core.config import ApiScope
from core.models.events import EventIn
from core.models.people import channel_serves
from core.models.rules import Rule
from core.planning import build_event, dry_run
from core.rulebook import api_rule, put_rule, remove_rule
from core.runtime import Runtime


class RuleView(Rule):
    origin: Literal["config", "api"]


class RulePage(BaseModel):
    items: list[RuleView]


class Verdict(BaseModel):
    rule: str
    matched: bool
    check: str | None
    detail: str | None


class DryRun(BaseModel):
    """What an event would do: matches, the first failed check of every other rule, each action's outcome."""

    event: dict[str, Any]
    matched: list[str]
    rules: list[Verdict]
    actions: list[dict[str, Any]]
    sent: bool


class DryRunBody(BaseModel):
    event: EventIn


def _check_rule_tenant(principal: Principal, rule: Rule) -> None:
    if rule.tenant == "*" and principal.tenant != "*":
        raise ApiError(403, "only a key for every tenant may manage rules for every tenant")
    principal.check_tenant(rule.tenant)


def _rule_json(rule: Rule, origin: str) -> dict[str, Any]:
    return {**rule.model_dump(mode="json"), "origin": origin}


def _check_channels(request: web.Request, principal: Principal, rule: Rule) -> None:
    runtime = runtime_of(request)
    errors = []
    for hook in ("actions", "on_acknowledge", "on_deny", "on_escalate", "on_expire"):
        for index, action in enumerate(getattr(rule, hook)):
            field = f"{hook}[{index}].channel"
            config = runtime.channel_configs.get(action.channel)
            if action.channel not in runtime.channels or config is None or not principal.sees(config.tenant):
                # Another tenant's channel is answered as an unknown one: its name is not confirmed either.
                errors.append({"field": field, "message": f"no channel named {action.channel!r}"})
            elif not channel_serves(config.tenant, rule.tenant):
                message = f"channel {action.channel!r} belongs to tenant {config.tenant!r}, not to {rule.tenant!r}"
                errors.append({"field": field, "message": message})
    if errors:
        raise ApiError(422, "invalid rule", errors=errors)


class Rules(NamedItems[Rule]):
    """Rules made through the API; each replica's rule book compiles them beside the config file's."""

    noun = "rule"
    model = Rule

    async def refresh(self, runtime: Runtime, *, force: bool = False) -> None:
        await runtime.rulebook.refresh(force=force)

    def in_force(self, runtime: Runtime, name: str) -> Rule | None:
        return next((rule for rule in runtime.rulebook.all_rules() if rule.name == name), None)

    def from_config(self, runtime: Runtime, name: str) -> bool:
        return runtime.rulebook.origin(name) == "config"

    async def current(self, runtime: Runtime, name: str) -> Rule | None:
        return await api_rule(db=runtime.db, name=name)

    def defaults(self, principal: Principal) -> dict[str, Any]:
        return {"tenant": principal.tenant}

    def check(self, request: web.Request, principal: Principal, item: Rule) -> None:
        _check_rule_tenant(principal, item)
        _check_channels(request, principal, item)

    async def put(self, runtime: Runtime, item: Rule, now: datetime) -> None:
        await put_rule(db=runtime.db, rule=item, now=now)

    async def remove(self, runtime: Runtime, name: str) -> None:
        await remove_rule(db=runtime.db, name=name)

    def view(self, request: web.Request, item: Rule) -> dict[str, Any]:
        return _rule_json(item, "api")


RULES = Rules()


@documented(summary="Every rule in force", scope=ApiScope.notify_read, responses={200: RulePage}, tags=("rules",))
async def list_rules(request: web.Request) -> web.Response:
    """Every rule in force that the key may see, config rules first."""
    principal = authenticate(request, ApiScope.notify_read)
    book = runtime_of(request).rulebook
    await book.refresh()
    items = [_rule_json(rule, book.origin(rule.name)) for rule in book.all_rules() if principal.sees(rule.tenant)]
    return json_response({"items": items})


@documented(summary="One rule", scope=ApiScope.notify_read, responses={200: RuleView}, tags=("rules",))
async def get_rule(request: web.Request) -> web.Response:
    """One rule by name."""
    principal = authenticate(request, ApiScope.notify_read)
    book = runtime_of(request).rulebook
    await book.refresh()
    name = request.match_info["name"]
    rule = next((r for r in book.all_rules() if r.name == name), None)
    if rule is None or not principal.sees(rule.tenant):
        raise ApiError(404, f"no rule named {name!r}")
    return json_response(_rule_json(rule, book.origin(name)))


@documented(
    summary="Create a rule",
    scope=ApiScope.notify_admin,
    body=Rule,
    responses={201: RuleView, 409: "a rule of that name exists"},
    tags=("rules",),
)
async def create_rule(request: web.Request) -> web.Response:
    """POST /api/v1/rules: a new rule; 409 if the name is taken."""
    return await RULES.create(request)


@documented(
    summary="Change top-level fields of an API rule",
    scope=ApiScope.notify_admin,
    body=dict[str, Any],
    responses={200: RuleView, 409: "the rule comes from the config file"},
    tags=("rules",),
)
async def patch_rule(request: web.Request) -> web.Response:
    """PATCH /api/v1/rules/{name}: merge the given top-level fields into an API rule."""
    return await RULES.patch(request)


@documented(
    summary="Delete an API rule",
    scope=ApiScope.notify_admin,
    responses={204: None, 409: "the rule comes from the config file"},
    tags=("rules",),
)
async def delete_rule(request: web.Request) -> web.Response:
    """DELETE /api/v1/rules/{name}."""
    return await RULES.delete(request)


@documented(
    summary="Dry-run an event: matches, non-matches explained, what each action would do; nothing is sent",
    scope=ApiScope.notify_read,
    body=DryRunBody | EventIn,
    responses={200: DryRun},
    tags=("rules",),
)
async def test_rules(request: web.Request) -> web.Response:
    """POST /api/v1/rules/test: which rules an event matches, why the others do not, what each action would do."""
    principal = authenticate(request, ApiScope.notify_read)
    runtime = runtime_of(request)
    body = await read_json(request)
    if isinstance(body, dict) and "event" in body:
        body = body["event"]
    incoming = parse_model(EventIn, body, prefix=("event",))
    tenant = incoming.tenant or (principal.tenant if principal.tenant != "*" else "default")
    principal.check_tenant(tenant)
    event = build_event(incoming, tenant=tenant, source="dry-run", clock=runtime.clock)
    answer = await dry_run(
        db=runtime.db,
        rulebook=runtime.rulebook,
        event=event,
        clock=runtime.clock,
        default_window=runtime.config.noise.dedup_window,
        settings=runtime.noise_settings,
        channels=runtime.channels,
    )
    return json_response(answer)


def routes() -> list[web.RouteDef]:
    """The rule routes."""
    return [
        web.get("/api/v1/rules", list_rules),
        web.post("/api/v1/rules", create_rule),
        web.post("/api/v1/rules/test", test_rules),
        web.get("/api/v1/rules/{name}", get_rule),
        web.patch("/api/v1/rules/{name}", patch_rule),
        web.delete("/api/v1/rules/{name}", delete_rule),
    ]
