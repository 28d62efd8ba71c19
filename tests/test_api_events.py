"""The event API over real HTTP: auth, limits, validation, idempotency, dedup, Alertmanager and Grafana."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from bot.handlers.http import validation_errors
from core.models.events import EventIn
from core.store.tables import DeliveryRow, EventRow
from tests.conftest import API_KEY, READ_KEY, TENANT_KEY, AppFactory, auth

EVENT = {
    "kind": "scanner.report.ready",
    "tenant": "acme",
    "severity": "high",
    "title": "3 critical CVEs in api:1.4",
    "summary": "openssl, zlib, glibc",
    "scope": {"namespace": "prod", "repo": "acme/api", "digest": "sha256:abc", "labels": {"team": "core"}},
    "payload": {"verdict": "fail", "critical": 3},
    "links": [{"title": "Report", "url": "https://scanner.example/r/1"}],
}


async def _count(runtime: Any, table: Any) -> int:
    async with runtime.db.read() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def test_auth_is_required_and_checked(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    resp = await client.post("/api/v1/events", json=EVENT)
    assert resp.status == 401
    assert "Bearer" in (await resp.json())["error"]["message"]
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth("wrong-key-000000000000"))
    assert resp.status == 401
    resp = await client.post("/api/v1/events", json=EVENT, headers={"Authorization": "Basic abc"})
    assert resp.status == 401
    # A read-only key cannot write events; a tenant key cannot write for another tenant.
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth(READ_KEY))
    assert resp.status == 403 and "events.write" in (await resp.json())["error"]["message"]
    resp = await client.post("/api/v1/events", json={**EVENT, "tenant": "other"}, headers=auth(TENANT_KEY))
    assert resp.status == 403


async def test_one_event_is_accepted_after_commit(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["event_id"].startswith("evt_")
    assert body["alert_id"].startswith("alr_")
    assert body["matched_rules"] == ["all"]
    assert body["deliveries"] == 1 and body["duplicate"] is False
    assert await _count(runtime, EventRow) == 1
    assert await _count(runtime, DeliveryRow) == 1
    assert resp.headers["X-Request-Id"]
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"


async def test_tenant_defaults_to_the_keys_tenant(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    event = {k: v for k, v in EVENT.items() if k != "tenant"}
    resp = await client.post("/api/v1/events", json=event, headers=auth(TENANT_KEY))
    assert resp.status == 202
    alert_id = (await resp.json())["alert_id"]
    alert = await (await client.get(f"/api/v1/alerts/{alert_id}", headers=auth(TENANT_KEY))).json()
    assert alert["tenant"] == "acme"


async def test_bad_input_names_the_field_and_never_500(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    resp = await client.post("/api/v1/events", data=b"{not json", headers=auth())
    assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]["message"]
    resp = await client.post("/api/v1/events", data=b"", headers=auth())
    assert resp.status == 400
    resp = await client.post("/api/v1/events", json={**EVENT, "severity": "apocalyptic", "colour": 1}, headers=auth())
    assert resp.status == 422
    fields = {f["field"] for f in (await resp.json())["error"]["fields"]}
    assert fields == {"severity", "colour"}
    resp = await client.post("/api/v1/events", json=[EVENT, {**EVENT, "title": ""}], headers=auth())
    assert resp.status == 422
    assert [f["field"] for f in (await resp.json())["error"]["fields"]] == ["[1].title"]
    resp = await client.post("/api/v1/events", json="a string", headers=auth())
    assert resp.status == 422
    resp = await client.post("/api/v1/events", json=[], headers=auth())
    assert resp.status == 422
    # Nothing of a refused batch was stored.
    assert await _count(runtime, EventRow) == 0


async def test_one_event_is_read_as_any_json_reader_would(app_factory: AppFactory) -> None:
    # A single event is validated from the body's bytes by pydantic; what pydantic's parser refuses is read again
    # as before, so JSON it does not take (UTF-16) still passes and a bad body gets the same answer.
    client, runtime = await app_factory(run_dispatcher=False)
    resp = await client.post("/api/v1/events", data=json.dumps(EVENT).encode("utf-16"), headers=auth())
    assert resp.status == 202, await resp.text()
    assert await _count(runtime, EventRow) == 1
    broken = json.dumps(EVENT).encode() + b" trailing"
    resp = await client.post("/api/v1/events", data=broken, headers=auth())
    assert resp.status == 400 and (await resp.json())["error"]["message"].startswith("request body is not valid JSON: ")
    scope = {"namespace": "prod", "labels": {"team": 7}}
    bad = {**EVENT, "ts": "yesterday", "scope": scope, "links": [{"url": 1}]}
    resp = await client.post("/api/v1/events", data=json.dumps(bad).encode(), headers=auth())
    assert resp.status == 422
    fields = (await resp.json())["error"]["fields"]
    assert [f["field"] for f in fields] == ["ts", "scope.labels.team", "links[0].url"]
    with pytest.raises(ValidationError) as refused:
        EventIn.model_validate(bad)
    assert fields == validation_errors(refused.value)  # the messages of validating the parsed document
    assert await _count(runtime, EventRow) == 1


async def test_body_limits(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    huge = {**EVENT, "payload": {"blob": "x" * (1024 * 1024)}}
    resp = await client.post("/api/v1/events", data=json.dumps(huge).encode(), headers=auth())
    assert resp.status == 413
    resp = await client.post("/api/v1/events", json=[EVENT] * 1001, headers=auth())
    assert resp.status == 413


async def test_batch_of_events(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    batch = [{**EVENT, "dedup_key": f"k{i}"} for i in range(250)]
    resp = await client.post("/api/v1/events", json=batch, headers=auth())
    assert resp.status == 202
    results = await resp.json()
    assert len(results) == 250 and all(r["deliveries"] == 1 for r in results)
    assert len({r["alert_id"] for r in results}) == 250
    assert await _count(runtime, DeliveryRow) == 250


async def test_same_client_id_is_answered_from_the_first_copy(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    first = await (await client.post("/api/v1/events", json={**EVENT, "id": "job-42"}, headers=auth())).json()
    again = await (await client.post("/api/v1/events", json={**EVENT, "id": "job-42"}, headers=auth())).json()
    assert again["duplicate"] is True and again["event_id"] == first["event_id"] and again["deliveries"] == 0
    assert await _count(runtime, EventRow) == 1
    assert await _count(runtime, DeliveryRow) == 1


async def test_dedup_key_inside_the_window_creates_no_delivery(app_factory: AppFactory, clock: Any) -> None:
    client, runtime = await app_factory(run_dispatcher=False, clock=clock)
    event = {**EVENT, "dedup_key": "cve-report-api"}
    first = await (await client.post("/api/v1/events", json=event, headers=auth())).json()
    second = await (await client.post("/api/v1/events", json=event, headers=auth())).json()
    assert first["duplicate"] is False and first["deliveries"] == 1
    assert second["duplicate"] is True and second["deliveries"] == 0
    assert second["alert_id"] == first["alert_id"]
    alert = await (await client.get(f"/api/v1/alerts/{first['alert_id']}", headers=auth())).json()
    assert alert["event_count"] == 2
    # After the default 5-minute window the same event notifies again, and says how many were held back.
    from datetime import timedelta

    clock.advance(timedelta(minutes=6))
    third = await (await client.post("/api/v1/events", json=event, headers=auth())).json()
    assert third["duplicate"] is False and third["deliveries"] == 1
    async with runtime.db.read() as session:
        rows = (await session.execute(select(DeliveryRow).order_by(DeliveryRow.created_at))).scalars().all()
    assert [r.suppressed_count for r in rows] == [0, 1]


async def test_alertmanager_firing_then_resolved(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    alert = {
        "status": "firing",
        "labels": {"alertname": "HighLatency", "severity": "critical", "namespace": "prod", "job": "api"},
        "annotations": {"summary": "p99 latency above 2s", "description": "for 10 minutes"},
        "startsAt": "2026-11-22T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=latency",
        "fingerprint": "c0ffee1234",
    }
    payload = {
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "status": "firing",
        "receiver": "ackbot",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager.example",
        "alerts": [alert],
    }
    resp = await client.post("/api/v1/ingest/alertmanager?tenant=acme", json=payload, headers=auth())
    assert resp.status == 202, await resp.text()
    (fired,) = (await resp.json())["events"]
    assert fired["deliveries"] == 1
    record = await (await client.get(f"/api/v1/alerts/{fired['alert_id']}", headers=auth())).json()
    assert record["status"] == "open" and record["severity"] == "critical"
    assert record["kind"] == "alertmanager.HighLatency" and record["title"] == "p99 latency above 2s"
    assert record["scope"]["namespace"] == "prod"

    resolved = {
        **payload,
        "status": "resolved",
        "alerts": [{**alert, "status": "resolved", "endsAt": "2026-11-22T03:20:00Z"}],
    }
    resp = await client.post("/api/v1/ingest/alertmanager?tenant=acme", json=resolved, headers=auth())
    (closed,) = (await resp.json())["events"]
    assert closed["alert_id"] == fired["alert_id"] and closed["deliveries"] == 1
    record = await (await client.get(f"/api/v1/alerts/{fired['alert_id']}", headers=auth())).json()
    assert record["status"] == "resolved" and record["resolved_at"]

    # Firing again after the resolve opens a new alert.
    resp = await client.post("/api/v1/ingest/alertmanager?tenant=acme", json=payload, headers=auth())
    (again,) = (await resp.json())["events"]
    assert again["alert_id"] != fired["alert_id"]

    resp = await client.post("/api/v1/ingest/alertmanager", json={"alerts": "nope"}, headers=auth())
    assert resp.status == 422 and (await resp.json())["error"]["fields"][0]["field"] == "alerts"


async def test_grafana_webhook(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    payload = {
        "receiver": "ackbot",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "severity": "warning", "grafana_folder": "infra"},
                "annotations": {"summary": "disk / at 95%"},
                "startsAt": "2026-11-22T03:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://grafana.example/alerting/grafana/abc/view",
                "fingerprint": "57c6d9296de2ad39",
                "dashboardURL": "https://grafana.example/d/xyz",
                "valueString": "[ var='B' value=95 ]",
            }
        ],
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "https://grafana.example/",
        "version": "1",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] DiskFull",
        "state": "alerting",
        "message": "...",
    }
    resp = await client.post("/api/v1/ingest/grafana", json=payload, headers=auth(TENANT_KEY))
    assert resp.status == 202, await resp.text()
    (fired,) = (await resp.json())["events"]
    record = await (await client.get(f"/api/v1/alerts/{fired['alert_id']}", headers=auth(TENANT_KEY))).json()
    assert record["tenant"] == "acme" and record["severity"] == "medium" and record["scope"]["namespace"] == "infra"
    assert [link["title"] for link in record["links"]] == ["Source", "Dashboard"]


async def test_list_alerts_filters_and_pages(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    batch = [
        {**EVENT, "dedup_key": f"a{i}", "severity": "critical" if i % 3 == 0 else "low", "tenant": "acme"}
        for i in range(12)
    ]
    batch.append({**EVENT, "dedup_key": "other", "tenant": "globex"})
    assert (await client.post("/api/v1/events", json=batch, headers=auth())).status == 202
    resp = await client.get("/api/v1/alerts?severity=critical&status=open", headers=auth(TENANT_KEY))
    items = (await resp.json())["items"]
    assert len(items) == 4 and all(a["severity"] == "critical" for a in items)
    # Pages of 5 cover all twelve of acme's alerts once; the tenant key never sees globex.
    seen: list[str] = []
    url = "/api/v1/alerts?limit=5"
    while url:
        page = await (await client.get(url, headers=auth(TENANT_KEY))).json()
        seen += [a["id"] for a in page["items"]]
        url = f"/api/v1/alerts?limit=5&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert len(seen) == len(set(seen)) == 12
    assert (await client.get("/api/v1/alerts?tenant=globex", headers=auth(TENANT_KEY))).status == 403
    everything = await (await client.get("/api/v1/alerts?limit=500", headers=auth(API_KEY))).json()
    assert len(everything["items"]) == 13
    resp = await client.get("/api/v1/alerts?status=sleeping&limit=0", headers=auth())
    assert resp.status == 422
    assert {f["field"] for f in (await resp.json())["error"]["fields"]} == {"status", "limit"}
    assert (await client.get("/api/v1/alerts?cursor=!!", headers=auth())).status == 400
    assert (await client.get("/api/v1/alerts/alr_nope", headers=auth())).status == 404
    other = (await client.get("/api/v1/alerts?tenant=globex", headers=auth())).json()
    other_id = (await other)["items"][0]["id"]
    assert (await client.get(f"/api/v1/alerts/{other_id}", headers=auth(TENANT_KEY))).status == 404


async def test_probes_and_metrics(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["migrations"]["current"]
    await client.post("/api/v1/events", json=EVENT, headers=auth())
    text = await (await client.get("/metrics")).text()
    assert 'ackbot_events_received_total{kind="scanner.report.ready",source="api"} 1.0' in text
    assert 'ackbot_rules_matched_total{rule="all"} 1.0' in text
    assert 'ackbot_deliveries_total{channel="console",status="pending"} 1.0' in text
    assert (
        'ackbot_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/api/v1/events",status="202"}'
        in text
    )
    assert (await client.get("/nowhere")).status == 404
    refused = await client.put("/api/v1/events")
    assert refused.status == 405 and refused.headers["Allow"] == "POST"
    # A path that a literal route names and a pattern fits too: Allow lists the literal route's methods only.
    for path, allowed in [("/api/v1/rules/test", "POST"), ("/api/v1/channels/health", "GET,HEAD")]:
        refused = await client.put(path, headers=auth())
        assert refused.status == 405 and refused.headers["Allow"] == allowed, (path, refused.headers.get("Allow"))
    pattern = await client.put("/api/v1/rules/some-rule", headers=auth())
    assert pattern.status == 405 and set(pattern.headers["Allow"].split(",")) >= {"GET", "PATCH", "DELETE"}


async def test_overlapping_batches_in_opposite_orders_both_commit(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    batch = [{**EVENT, "dedup_key": f"o{i}"} for i in range(40)]
    # The same alerts in opposite orders, at once: on PostgreSQL this deadlocks unless rows lock in one order.
    import asyncio

    answers = await asyncio.gather(
        *(
            client.post("/api/v1/events", json=list(reversed(batch)) if n % 2 else batch, headers=auth())
            for n in range(6)
        )
    )
    assert [a.status for a in answers] == [202] * 6
    results = [await a.json() for a in answers]
    # Answers come back in the order the batch listed the events.
    assert [r["alert_id"] for r in results[0]] == list(reversed([r["alert_id"] for r in results[1]]))
    assert await _count(runtime, EventRow) == 240
