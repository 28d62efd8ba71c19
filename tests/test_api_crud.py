"""Channels and rules made through the API share one create / change / delete flow (bot/handlers/crud.py):
the same answers for a taken name, a config-file item, an unknown name, a fixed field, a body that is no object,
and a key limited to one tenant."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import AppFactory, auth, make_config

ACME_ADMIN_KEY = "test-acme-admin-key-0123456789"
HOOK_SETTINGS = {"url": "https://hooks.example.org/a", "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET"}
# kind -> (an item to create, the name of the config file's item of that kind, a change, the field it changes
# and the value that field then has)
KINDS: dict[str, tuple[dict[str, Any], str, dict[str, Any], str, Any]] = {
    "channels": (
        {"name": "hook", "type": "webhook", "settings": HOOK_SETTINGS},
        "console",
        {"settings": {"method": "PUT"}},
        "settings",
        {**HOOK_SETTINGS, "method": "PUT"},
    ),
    "rules": (
        {"name": "acme-only", "tenant": "acme", "actions": [{"channel": "console"}]},
        "all",
        {"description": "acme's own"},
        "description",
        "acme's own",
    ),
}


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    error: dict[str, Any] = (await response.json())["error"]
    return error


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_one_flow_for_channels_and_rules(app_factory: AppFactory, database_url: str, kind: str) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    item, from_config, change, field, value = KINDS[kind]
    path, noun = f"/api/v1/{kind}", kind.removesuffix("s")
    name = item["name"]

    assert (await client.post(path, json=item, headers=auth())).status == 201
    taken = await error_of(await client.post(path, json=item, headers=auth()), 409)
    assert taken["message"] == f"a {noun} named {name!r} exists; PATCH it instead"

    renamed = await error_of(await client.patch(f"{path}/{name}", json={"name": "other"}, headers=auth()), 422)
    assert renamed["fields"] == [{"field": "name", "message": "cannot be changed"}]
    not_object = await error_of(await client.patch(f"{path}/{name}", json=[1], headers=auth()), 422)
    assert not_object["fields"] == [{"field": "(body)", "message": "expected a JSON object"}]
    bad = await error_of(await client.patch(f"{path}/{name}", json={"enabled": "maybe"}, headers=auth()), 422)
    assert [f["field"] for f in bad["fields"]] == ["enabled"]
    changed = await client.patch(f"{path}/{name}", json=change, headers=auth())
    assert changed.status == 200
    shown = await (await client.get(f"{path}/{name}", headers=auth())).json()
    assert (await changed.json()) == shown and shown[field] == value

    unknown = await error_of(await client.patch(f"{path}/nothing", json={"enabled": False}, headers=auth()), 404)
    assert unknown["message"] == f"no {noun} named 'nothing'"
    assert (await client.delete(f"{path}/nothing", headers=auth())).status == 404
    fixed = await error_of(await client.patch(f"{path}/{from_config}", json={"enabled": False}, headers=auth()), 409)
    assert fixed["message"] == f"{noun} {from_config!r} comes from the config file; change it there"
    kept = await error_of(await client.delete(f"{path}/{from_config}", headers=auth()), 409)
    assert kept["message"] == f"{noun} {from_config!r} comes from the config file; remove it there"

    assert (await client.delete(f"{path}/{name}", headers=auth())).status == 204
    assert (await client.get(f"{path}/{name}", headers=auth())).status == 404


async def test_a_channel_keeps_its_type_and_merges_settings(app_factory: AppFactory, database_url: str) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    hook = {"name": "hook", "type": "webhook", "settings": {**HOOK_SETTINGS, "method": "POST"}}
    assert (await client.post("/api/v1/channels", json=hook, headers=auth())).status == 201
    retyped = await client.patch("/api/v1/channels/hook", json={"type": "console"}, headers=auth())
    assert (await error_of(retyped, 422))["fields"] == [{"field": "type", "message": "cannot be changed"}]
    flat = await client.patch("/api/v1/channels/hook", json={"settings": "PUT"}, headers=auth())
    assert (await error_of(flat, 422))["fields"] == [{"field": "settings", "message": "expected an object"}]
    merged = await client.patch("/api/v1/channels/hook", json={"settings": {"method": "PUT"}}, headers=auth())
    assert merged.status == 200
    assert (await merged.json())["settings"] == {**HOOK_SETTINGS, "method": "PUT"}


async def test_a_disabled_channel_stays_known_and_can_be_enabled_again(
    app_factory: AppFactory, database_url: str
) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    hook = {"name": "hook", "type": "webhook", "settings": HOOK_SETTINGS}
    assert (await client.post("/api/v1/channels", json=hook, headers=auth())).status == 201
    off = await client.patch("/api/v1/channels/hook", json={"enabled": False}, headers=auth())
    assert off.status == 200 and (await off.json())["enabled"] is False
    # Out of service (no delivery goes to it), but still listed and changeable.
    assert "hook" not in runtime.channels
    shown = await client.get("/api/v1/channels/hook", headers=auth())
    assert shown.status == 200 and (await shown.json())["enabled"] is False
    listed = await (await client.get("/api/v1/channels", headers=auth())).json()
    assert "hook" in [c["name"] for c in listed["items"]]
    on = await client.patch("/api/v1/channels/hook", json={"enabled": True}, headers=auth())
    assert on.status == 200 and (await on.json())["enabled"] is True
    assert "hook" in runtime.channels


async def test_a_tenant_key_changes_only_its_tenants_rules(app_factory: AppFactory, database_url: str) -> None:
    keys = [
        {"name": "admin", "key": "env:ACKBOT_TEST_ADMIN_KEY", "tenant": "*", "scopes": ["notify.admin"]},
        {"name": "acme-admin", "key": "env:ACKBOT_TEST_ACME_ADMIN_KEY", "tenant": "acme", "scopes": ["notify.admin"]},
    ]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ACKBOT_TEST_ACME_ADMIN_KEY", ACME_ADMIN_KEY)
        client, _ = await app_factory(make_config(database_url, api_keys=keys), run_dispatcher=False)
    globex = {"name": "globex-only", "tenant": "globex", "actions": [{"channel": "console"}]}
    assert (await client.post("/api/v1/rules", json=globex, headers=auth())).status == 201
    acme = auth(ACME_ADMIN_KEY)
    # Another tenant's rule is not there for this key: the 404 of an unknown name.
    assert (await client.patch("/api/v1/rules/globex-only", json={"enabled": False}, headers=acme)).status == 404
    moved = await client.patch("/api/v1/rules/globex-only", json={"tenant": "acme"}, headers=acme)
    assert moved.status == 404
    assert (await client.delete("/api/v1/rules/globex-only", headers=acme)).status == 404
    mine = {**globex, "name": "acme-only", "tenant": "acme"}
    assert (await client.post("/api/v1/rules", json=mine, headers=acme)).status == 201
    # A key for one tenant cannot hand its rule to another tenant, nor to every tenant.
    for tenant in ("globex", "*"):
        assert (await client.patch("/api/v1/rules/acme-only", json={"tenant": tenant}, headers=acme)).status == 403
    assert (await client.delete("/api/v1/rules/acme-only", headers=acme)).status == 204
