"""Rules through the API and the dry run that explains matches and non-matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import READ_KEY, TENANT_KEY, AppFactory, auth

RULE = {
    "name": "prod-critical",
    "tenant": "acme",
    "match": {
        "kinds": ["scanner.*"],
        "namespaces": ["prod-*"],
        "min_severity": "high",
        "where": [{"field": "payload.verdict", "op": "eq", "value": "fail"}],
    },
    "actions": [{"channel": "console", "throttle": "15m"}],
}
EVENT = {
    "kind": "scanner.report.ready",
    "tenant": "acme",
    "severity": "critical",
    "title": "report",
    "scope": {"namespace": "prod-eu"},
    "payload": {"verdict": "fail"},
}


async def test_rule_crud(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    created = await client.post("/api/v1/rules", json=RULE, headers=auth())
    assert created.status == 201, await created.text()
    assert (await created.json())["origin"] == "api"
    assert (await client.post("/api/v1/rules", json=RULE, headers=auth())).status == 409
    listing = await (await client.get("/api/v1/rules", headers=auth(READ_KEY))).json()
    assert [(r["name"], r["origin"]) for r in listing["items"]] == [("all", "config"), ("prod-critical", "api")]

    # The new rule routes events at once: two rules match now.
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))
    assert (await resp.json())["matched_rules"] == ["all", "prod-critical"]

    patched = await client.patch("/api/v1/rules/prod-critical", json={"enabled": False}, headers=auth())
    assert patched.status == 200 and (await patched.json())["enabled"] is False
    resp = await client.post("/api/v1/events", json={**EVENT, "dedup_key": "again"}, headers=auth(TENANT_KEY))
    assert (await resp.json())["matched_rules"] == ["all"]
    bad = await client.patch("/api/v1/rules/prod-critical", json={"match": {"min_severity": "huge"}}, headers=auth())
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "match.min_severity"
    unknown_channel = await client.post(
        "/api/v1/rules", json={**RULE, "name": "x", "actions": [{"channel": "nowhere"}]}, headers=auth()
    )
    assert unknown_channel.status == 422
    assert (await unknown_channel.json())["error"]["fields"] == [
        {"field": "actions[0].channel", "message": "no channel named 'nowhere'"}
    ]
    assert (await client.patch("/api/v1/rules/all", json={"enabled": False}, headers=auth())).status == 409
    assert (await client.delete("/api/v1/rules/all", headers=auth())).status == 409
    assert (await client.delete("/api/v1/rules/prod-critical", headers=auth())).status == 204
    assert (await client.get("/api/v1/rules/prod-critical", headers=auth())).status == 404
    assert (await client.delete("/api/v1/rules/prod-critical", headers=auth())).status == 404


async def test_rule_permissions(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    # Writing rules needs notify.admin; a tenant key cannot manage another tenant's or every tenant's rules.
    assert (await client.post("/api/v1/rules", json=RULE, headers=auth(TENANT_KEY))).status == 403
    assert (await client.post("/api/v1/rules", json={**RULE, "tenant": "*"}, headers=auth())).status == 201
    assert (await client.get("/api/v1/rules", headers={})).status == 401


async def test_dry_run_explains_and_sends_nothing(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    assert (await client.post("/api/v1/rules", json=RULE, headers=auth())).status == 201
    low = {**EVENT, "severity": "low", "payload": {"verdict": "pass"}}
    resp = await client.post("/api/v1/rules/test", json={"event": low}, headers=auth(TENANT_KEY))
    assert resp.status == 200
    body = await resp.json()
    assert body["matched"] == ["all"] and body["sent"] is False
    verdict = next(v for v in body["rules"] if v["rule"] == "prod-critical")
    assert verdict["matched"] is False and verdict["check"] == "severity"
    assert "low" in verdict["detail"] and "high" in verdict["detail"]

    failing_where = {**EVENT, "payload": {"verdict": "pass"}}
    body = await (await client.post("/api/v1/rules/test", json=failing_where, headers=auth(TENANT_KEY))).json()
    verdict = next(v for v in body["rules"] if v["rule"] == "prod-critical")
    assert verdict["check"] == "where[0]" and "pass" in verdict["detail"]

    # A match shows what each action would do; after a real event, the dry run sees the open throttle window.
    body = await (await client.post("/api/v1/rules/test", json=EVENT, headers=auth(TENANT_KEY))).json()
    assert body["matched"] == ["all", "prod-critical"]
    assert {a["outcome"] for a in body["actions"]} == {"deliver"}
    await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))
    body = await (await client.post("/api/v1/rules/test", json=EVENT, headers=auth(TENANT_KEY))).json()
    assert {a["outcome"] for a in body["actions"]} == {"suppress"}
    assert "window open until" in body["actions"][0]["reason"]
    async with runtime.db.read() as session:
        from sqlalchemy import func, select

        from core.store.tables import DeliveryRow

        assert (await session.execute(select(func.count()).select_from(DeliveryRow))).scalar_one() == 2
    bad = await client.post("/api/v1/rules/test", json={"event": {"kind": "x"}}, headers=auth())
    assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "event.title"


def test_rules_test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    config = tmp_path / "c.yml"
    config.write_text(
        "channels: [{name: console, type: console}]\n"
        "rules:\n"
        "  - {name: crit, match: {min_severity: critical}, actions: [{channel: console}]}\n"
        "  - {name: any, actions: [{channel: console}]}\n"
    )
    event = tmp_path / "e.json"
    event.write_text('{"kind": "k", "title": "t", "severity": "low"}')
    assert main(["rules", "test", str(event), "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("no    crit  (severity:")
    assert out[1] == "MATCH any"
