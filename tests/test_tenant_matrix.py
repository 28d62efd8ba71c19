"""Tenant scoping on every route, generated from the app's own route table: a route added without an entry in
ROUTES fails here, so none can miss the check.

Every route is asked by a key of tenant acme, read-only and admin, about an item (or for a tenant) that is acme's
own, globex's, and shared by every tenant ("*"). Another tenant's item is the 404 of an unknown one; asking for
another tenant (or for every tenant) is 403; a shared item is read by all and changed only by a key for every
tenant. Across all of it, no answer to an acme key carries anything of globex's: a name, an id or the marker in
every globex object's text, unless the request itself said it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import API_KEY, AppFactory, auth, make_config

ACME_ADMIN = "matrix-acme-admin-key-0123456789"
ACME_READ = "matrix-acme-read-key-0123456789"
KEYS = {"read": ACME_READ, "admin": ACME_ADMIN}
PRIVATE = "GLOBEX-PRIVATE"  # in the text of every globex object
TENANT = {"own": "acme", "other": "globex", "shared": "*"}
Subject = Literal["own", "other", "shared"]
SUBJECTS: tuple[Subject, ...] = ("own", "other", "shared")
KINDS = ("channel", "rule", "silence", "alert", "delivery", "approval", "digest")


@dataclass
class World:
    """The items of each tenant, by kind: their path ids, and what of globex's must never show."""

    ids: dict[str, dict[str, str]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    tokens: dict[str, str] = field(default_factory=dict)
    globex_secrets: set[str] = field(default_factory=lambda: {PRIVATE})

    def add(self, kind: str, subject: str, item_id: str) -> None:
        self.ids[kind][subject] = item_id
        if subject == "other":
            self.globex_secrets.add(item_id)


Body = Callable[[World, Subject, str], Any]


@dataclass(frozen=True)
class Route:
    """How to ask a route about a subject and what the answer must be.

    scope: what the key needs (read: notify.read, write: events.write, admin: notify.admin). kind: the item the path
    (or the body) addresses, None for a collection. tenant_in: a collection route that names a tenant (in its query
    or body); one that names none is asked once, and its answer checked for globex's items. own/shared: the answers
    expected for acme's own and for a shared item (default: any 2xx; shared items exist for channels, rules and
    silences). tenantless: why a route holds no tenant's data (probes, platform webhooks, public keys).
    """

    scope: Literal["read", "write", "admin", "none"] = "read"
    kind: str | None = None
    tenant_in: bool = False
    body: Body | None = None
    query: Callable[[str], str] | None = None
    own: frozenset[int] | None = None
    shared: frozenset[int] = frozenset({200})
    mutates: bool = False
    tenantless: str = ""
    optional: bool = False  # mounted only when configured (Slack)


def codes(*values: int) -> frozenset[int]:
    return frozenset(values)


def tenant_query(tenant: str) -> str:
    return f"?tenant={tenant}"


def alertmanager(_world: World, _subject: Subject, _tenant: str) -> Any:
    labels = {"alertname": "MatrixProbe", "severity": "warning"}
    alert = {"status": "firing", "labels": labels, "annotations": {}, "startsAt": "2026-11-22T03:00:00Z"}
    return {"version": "4", "status": "firing", "receiver": "ackbot", "groupKey": "g", "alerts": [alert]}


def grafana(world: World, subject: Subject, tenant: str) -> Any:
    return {**alertmanager(world, subject, tenant), "orgId": 1}


def by_id(kind: str, **extra: Any) -> Body:
    return lambda world, subject, _tenant: {f"{kind}_id": world.ids[kind][subject], **extra}


SILENCE = {"created_by": "matrix", "duration": "1h", "matchers": {"kinds": ["matrix.*"]}}
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route(tenantless="a probe"),
    ("GET", "/readyz"): Route(tenantless="a probe"),
    ("GET", "/metrics"): Route(tenantless="process figures, no tenant's items"),
    ("GET", "/api/v1/openapi.json"): Route(tenantless="the API's document"),
    ("GET", "/api/v1/ack-tokens/keys"): Route(tenantless="public verification keys"),
    ("GET", "/ack/{token}"): Route(tenantless="the token names its approval; the person is checked (wrong_tenant)"),
    ("POST", "/ack/{token}"): Route(tenantless="the token names its approval; the person is checked (wrong_tenant)"),
    ("POST", "/api/messages"): Route(tenantless="Teams' Bot Framework activities; people are checked by tenant"),
    ("POST", "/slack/events"): Route(tenantless="Slack's signed requests; people are checked", optional=True),
    ("POST", "/api/v1/events"): Route(
        scope="write",
        tenant_in=True,
        body=lambda _w, _s, tenant: {"kind": "matrix.probe", "tenant": tenant, "title": "probe"},
        own=codes(202),
    ),
    ("POST", "/api/v1/ingest/alertmanager"): Route(
        scope="write", tenant_in=True, query=tenant_query, body=alertmanager, own=codes(202)
    ),
    ("POST", "/api/v1/ingest/grafana"): Route(
        scope="write", tenant_in=True, query=tenant_query, body=grafana, own=codes(202)
    ),
    ("GET", "/api/v1/alerts"): Route(tenant_in=True, query=tenant_query),
    ("GET", "/api/v1/alerts/{alert_id}"): Route(kind="alert"),
    ("GET", "/api/v1/rules"): Route(),
    ("POST", "/api/v1/rules"): Route(
        scope="admin",
        tenant_in=True,
        body=lambda _w, s, tenant: {"name": f"probe-{s}", "tenant": tenant, "actions": [{"channel": "acme-chan"}]},
        own=codes(201),
    ),
    ("POST", "/api/v1/rules/test"): Route(
        tenant_in=True, body=lambda _w, _s, tenant: {"event": {"kind": "matrix.x", "tenant": tenant, "title": "t"}}
    ),
    ("GET", "/api/v1/rules/{name}"): Route(kind="rule"),
    ("PATCH", "/api/v1/rules/{name}"): Route(
        scope="admin", kind="rule", body=lambda *_: {"description": "changed"}, shared=codes(403), mutates=True
    ),
    ("DELETE", "/api/v1/rules/{name}"): Route(scope="admin", kind="rule", shared=codes(403), mutates=True),
    ("GET", "/api/v1/deliveries"): Route(),
    ("GET", "/api/v1/deliveries/{delivery_id}"): Route(kind="delivery"),
    ("POST", "/api/v1/deliveries/{delivery_id}/retry"): Route(scope="admin", kind="delivery", own=codes(409)),
    ("GET", "/api/v1/channels"): Route(),
    ("POST", "/api/v1/channels"): Route(
        scope="admin",
        tenant_in=True,
        body=lambda _w, s, tenant: {"name": f"probe-{s}", "type": "console", "tenant": tenant},
        own=codes(201),
    ),
    ("GET", "/api/v1/channels/health"): Route(),
    ("GET", "/api/v1/channels/{name}"): Route(kind="channel"),
    ("PATCH", "/api/v1/channels/{name}"): Route(
        scope="admin", kind="channel", body=lambda *_: {"enabled": True}, shared=codes(403), mutates=True
    ),
    ("DELETE", "/api/v1/channels/{name}"): Route(scope="admin", kind="channel", shared=codes(403), mutates=True),
    # A shared channel is one a tenant's rules may send through, so its keys may test it too.
    ("POST", "/api/v1/channels/{name}/test"): Route(scope="admin", kind="channel"),
    ("GET", "/api/v1/channels/{name}/health"): Route(kind="channel"),
    ("POST", "/api/v1/approvals"): Route(
        scope="write",
        tenant_in=True,
        body=lambda _w, _s, tenant: {"tenant": tenant, "title": "probe", "approvers": [], "targets": ["acme-chan"]},
        own=codes(201),
    ),
    ("GET", "/api/v1/approvals"): Route(tenant_in=True, query=tenant_query),
    ("GET", "/api/v1/approvals/{approval_id}"): Route(kind="approval"),
    ("POST", "/api/v1/approvals/{approval_id}/cancel"): Route(scope="write", kind="approval", mutates=True),
    # Run after the cancel: its own approval is decided already (409), which it can only say of one it sees.
    ("POST", "/api/v1/approvals/{approval_id}/decisions"): Route(
        scope="admin",
        kind="approval",
        body=lambda *_: {"actor": {"platform": "api", "id": "alice"}, "choice": "deny"},
        own=codes(200, 409),
        mutates=True,
    ),
    ("POST", "/api/v1/ack-tokens/issue"): Route(
        scope="admin", kind="approval", body=by_id("approval", choice="acknowledge")
    ),
    # A tenant's key verifies as its own tenant: another tenant's token is refused, and its claims are not shown.
    ("POST", "/api/v1/ack-tokens/verify"): Route(
        scope="admin", kind="token", body=lambda w, s, _t: {"token": w.tokens[s]}, own=codes(200)
    ),
    ("GET", "/api/v1/audit"): Route(tenant_in=True, query=tenant_query),
    ("POST", "/api/v1/silences"): Route(
        scope="admin", tenant_in=True, body=lambda _w, _s, tenant: {**SILENCE, "tenant": tenant}, own=codes(201)
    ),
    ("GET", "/api/v1/silences"): Route(tenant_in=True, query=tenant_query),
    ("GET", "/api/v1/silences/{silence_id}"): Route(kind="silence"),
    ("DELETE", "/api/v1/silences/{silence_id}"): Route(scope="admin", kind="silence", shared=codes(403), mutates=True),
    # The configured report covers every tenant: only a key for every tenant may see or send it.
    ("GET", "/api/v1/reports/preview"): Route(own=codes(403)),
    ("POST", "/api/v1/reports/send"): Route(scope="admin", own=codes(403)),
    ("GET", "/api/v1/digests"): Route(),
    ("GET", "/api/v1/digests/{window_id}"): Route(kind="digest"),
}
PLACEHOLDER = {"channel": "{name}", "rule": "{name}"}


def routes_of(client: TestClient[Any, Any]) -> set[tuple[str, str]]:
    found = set()
    for route in client.app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*") or route.resource is None:
            continue
        found.add((route.method, route.resource.canonical))
    return found


async def build_world(client: TestClient[Any, Any]) -> World:
    """Each tenant's items, made with the key for every tenant."""
    world = World()
    admin = auth(API_KEY)

    async def made(path: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        resp = await client.post(path, json=body, headers=admin)
        assert resp.status == status, (path, await resp.text())
        return dict(await resp.json())

    hook = {"url": f"https://hooks.example.org/{PRIVATE}", "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET"}
    channels = {
        "own": {"name": "acme-chan", "type": "console", "tenant": "acme"},
        "other": {"name": "globex-chan", "type": "webhook", "tenant": "globex", "settings": hook},
        "shared": {"name": "shared-chan", "type": "console", "tenant": "*"},
    }
    for subject, channel in channels.items():
        await made("/api/v1/channels", channel)
        world.add("channel", subject, channel["name"])
    for subject in SUBJECTS:
        tenant, channel = TENANT[subject], channels[subject]["name"]
        actions = [{"channel": channel}, {"channel": channel, "digest": "hourly"}]
        rule = {"name": f"{subject}-rule", "tenant": tenant, "match": {"kinds": ["matrix.*"]}, "actions": actions}
        if subject == "other":
            rule["description"] = PRIVATE
        await made("/api/v1/rules", rule)
        world.add("rule", subject, rule["name"])
    for subject in ("own", "other"):
        tenant = TENANT[subject]
        event = {
            "kind": "matrix.event",
            "tenant": tenant,
            "title": PRIVATE if subject == "other" else subject,
            "severity": "high",
        }
        resp = await client.post("/api/v1/events", json=event, headers=admin)
        assert resp.status == 202, await resp.text()
        result = await resp.json()
        world.add("alert", subject, result["alert_id"])
        deliveries = await (await client.get(f"/api/v1/deliveries?alert={result['alert_id']}", headers=admin)).json()
        for delivery in deliveries["items"]:
            world.add("delivery", subject, delivery["id"])
        targets = [channels[subject]["name"]]
        approval = await made(
            "/api/v1/approvals",
            {"tenant": tenant, "title": PRIVATE if subject == "other" else subject, "targets": targets},
        )
        world.add("approval", subject, approval["id"])
        token = await made("/api/v1/ack-tokens/issue", {"approval_id": approval["id"], "choice": "acknowledge"})
        world.tokens[subject] = token["token"]
        if subject == "other":
            world.globex_secrets.add(token["token"])
    for subject in SUBJECTS:  # after the events, which they would have silenced
        body = {**SILENCE, "tenant": TENANT[subject], "comment": PRIVATE if subject == "other" else subject}
        world.add("silence", subject, (await made("/api/v1/silences", body))["id"])
    windows = (await (await client.get("/api/v1/digests", headers=admin)).json())["items"]
    for window in windows:
        subject = {"acme": "own", "globex": "other"}.get(window["tenant"])
        if subject is not None:
            world.add("digest", subject, window["id"])
    assert set(world.ids["digest"]) == {"own", "other"}, windows
    return world


SUCCESS = frozenset(range(200, 300))


def expected(route: Route, key: str, subject: Subject) -> frozenset[int] | None:
    """The statuses the answer may have; None: any below 500 (the leak check is what matters)."""
    if key == "read" and route.scope in ("write", "admin"):
        return codes(403)  # the scope is checked before anything is looked up or said
    if route.kind == "token" and subject != "own":
        return None
    if route.kind is not None and subject != "own":
        return codes(404) if subject == "other" else route.shared
    if route.tenant_in and subject != "own":
        return codes(403)
    return route.own if route.own is not None else SUCCESS


def has(world: World, route: Route, subject: Subject) -> bool:
    """Whether the world holds an item of the route's kind for the subject (nothing but channels, rules and
    silences is shared by every tenant)."""
    if route.kind == "token":
        return subject in world.tokens
    return route.kind is None or subject in world.ids[route.kind]


async def ask(
    client: TestClient[Any, Any], world: World, method: str, path: str, route: Route, key: str, subject: Subject
) -> None:
    kind = route.kind
    if kind is not None and "{" in path:
        placeholder = path[path.index("{") : path.index("}") + 1]
        path = path.replace(placeholder, world.ids[kind][subject])
    if route.query is not None:
        path += route.query(TENANT[subject])
    body = route.body(world, subject, TENANT[subject]) if route.body is not None else None
    resp = await client.request(method, path, json=body, headers=auth(KEYS[key]))
    text = await resp.text()
    where = (method, path, key, subject, resp.status, text[:300])
    allowed = expected(route, key, subject)
    assert resp.status < 500, where
    assert allowed is None or resp.status in allowed, where
    asked = path + json.dumps(body)
    leaked = [secret for secret in world.globex_secrets if secret in text and secret not in asked]
    assert not leaked, (where, leaked)


async def snapshot(client: TestClient[Any, Any], world: World) -> dict[str, Any]:
    """Globex's items as the key for every tenant reads them."""
    paths = {
        "channel": "/api/v1/channels/{}",
        "rule": "/api/v1/rules/{}",
        "silence": "/api/v1/silences/{}",
        "alert": "/api/v1/alerts/{}",
        "delivery": "/api/v1/deliveries/{}",
        "approval": "/api/v1/approvals/{}",
        "digest": "/api/v1/digests/{}",
    }
    found = {}
    for kind, template in paths.items():
        resp = await client.get(template.format(world.ids[kind]["other"]), headers=auth(API_KEY))
        assert resp.status == 200, (kind, await resp.text())
        found[kind] = await resp.json()
    return found


async def test_every_route_keeps_tenants_apart(
    app_factory: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATRIX_ACME_ADMIN", ACME_ADMIN)
    monkeypatch.setenv("MATRIX_ACME_READ", ACME_READ)
    keys = [
        {"name": "admin", "key": "env:ACKBOT_TEST_ADMIN_KEY", "tenant": "*", "scopes": ["notify.admin"]},
        {"name": "acme-admin", "key": "env:MATRIX_ACME_ADMIN", "tenant": "acme", "scopes": ["notify.admin"]},
        {"name": "acme-read", "key": "env:MATRIX_ACME_READ", "tenant": "acme", "scopes": ["notify.read"]},
    ]
    people = [{"name": "alice", "identities": {"email": "alice@example.com"}}]
    config = make_config(database_url, api_keys=keys, people=people, rules=[])
    client, _runtime = await app_factory(config, run_dispatcher=False)

    served = routes_of(client)
    missing = served - set(ROUTES)
    assert not missing, f"routes without a tenant entry in ROUTES: {sorted(missing)}"
    gone = {r for r, spec in ROUTES.items() if r not in served and not spec.optional}
    assert not gone, f"ROUTES lists routes the app does not serve: {sorted(gone)}"

    world = await build_world(client)
    before = await snapshot(client, world)
    scoped = [(r, spec) for r, spec in ROUTES.items() if r in served and not spec.tenantless]
    # Other tenants' and shared items first, none of which may change; then acme's own, deletions last.
    for (method, path), route in scoped:
        for key in KEYS:
            subjects: tuple[Subject, ...] = ("other", "shared") if route.kind or route.tenant_in else ("own",)
            for subject in subjects:
                if not has(world, route, subject) or (route.mutates and subject == "own"):
                    continue
                await ask(client, world, method, path, route, key, subject)
    assert await snapshot(client, world) == before

    def stage(method: str, route: Route) -> int:
        return 2 if method == "DELETE" else int(route.mutates)

    for current in (0, 1, 2):  # reading, then changing, then deleting acme's own items
        for (method, path), route in scoped:
            if stage(method, route) != current or not (route.kind or route.tenant_in or route.mutates):
                continue  # a route that names no item and no tenant was asked above
            for key in KEYS:
                await ask(client, world, method, path, route, key, "own")
    for (method, path), route in ROUTES.items():
        if route.tenantless and (method, path) in served and "{" not in path and method == "GET":
            for key in KEYS:
                resp = await client.get(path, headers=auth(KEYS[key]))
                assert resp.status < 500 and PRIVATE not in await resp.text(), (path, key)


async def test_rules_and_approvals_name_only_their_tenants_or_shared_channels(
    app_factory: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATRIX_ACME_ADMIN", ACME_ADMIN)
    keys = [
        {"name": "admin", "key": "env:ACKBOT_TEST_ADMIN_KEY", "tenant": "*", "scopes": ["notify.admin"]},
        {"name": "acme-admin", "key": "env:MATRIX_ACME_ADMIN", "tenant": "acme", "scopes": ["notify.admin"]},
    ]
    people = [{"name": "alice", "identities": {"email": "alice@example.com"}}]
    config = make_config(database_url, api_keys=keys, people=people)
    client, _runtime = await app_factory(config, run_dispatcher=False)
    admin, acme = auth(API_KEY), auth(ACME_ADMIN)
    for name, tenant in (("acme-chan", "acme"), ("globex-chan", "globex"), ("shared-chan", "*")):
        body = {"name": name, "type": "console", "tenant": tenant}
        assert (await client.post("/api/v1/channels", json=body, headers=admin)).status == 201
    # A tenant's key makes its own tenant's channel when it names none; it cannot make a shared one.
    resp = await client.post("/api/v1/channels", json={"name": "mine", "type": "console"}, headers=acme)
    assert resp.status == 201 and (await resp.json())["tenant"] == "acme"
    resp = await client.post("/api/v1/channels", json={"name": "x", "type": "console", "tenant": "*"}, headers=acme)
    assert resp.status == 403
    resp = await client.patch("/api/v1/channels/mine", json={"tenant": "*"}, headers=acme)
    assert resp.status == 422 and (await resp.json())["error"]["fields"][0]["field"] == "tenant"

    def rule(name: str, tenant: str, channel: str) -> dict[str, Any]:
        return {"name": name, "tenant": tenant, "actions": [{"channel": channel}]}

    for body, key, status in [
        (rule("r1", "acme", "acme-chan"), acme, 201),
        (rule("r2", "acme", "shared-chan"), acme, 201),
        (rule("r3", "acme", "globex-chan"), acme, 422),  # answered as an unknown channel
        (rule("r4", "acme", "globex-chan"), admin, 422),  # not even a key for every tenant may cross
        (rule("r5", "*", "acme-chan"), admin, 422),  # a rule for every tenant would send globex's events there
        (rule("r6", "*", "shared-chan"), admin, 201),
    ]:
        resp = await client.post("/api/v1/rules", json=body, headers=key)
        assert resp.status == status, (body, await resp.text())
        if status == 422:
            assert (await resp.json())["error"]["fields"][0]["field"] == "actions[0].channel"
    resp = await client.post("/api/v1/rules", json=rule("r3", "acme", "globex-chan"), headers=acme)
    assert "no channel named 'globex-chan'" in await resp.text()

    approval = {"tenant": "acme", "title": "t", "targets": ["globex-chan"]}
    for key in (acme, admin):
        resp = await client.post("/api/v1/approvals", json=approval, headers=key)
        assert resp.status == 422 and "no channel named 'globex-chan'" in await resp.text()
    approval["targets"] = ["acme-chan", "shared-chan"]
    assert (await client.post("/api/v1/approvals", json=approval, headers=acme)).status == 201


def test_the_config_file_keeps_rules_to_their_tenants_channels(database_url: str) -> None:
    channels = [{"name": "globex-chan", "type": "console", "tenant": "globex"}]
    with pytest.raises(ValueError, match="belongs to tenant 'globex'"):
        make_config(
            database_url,
            channels=channels,
            rules=[{"name": "r", "tenant": "acme", "actions": [{"channel": "globex-chan"}]}],
        )
