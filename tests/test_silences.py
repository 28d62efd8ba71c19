"""Silences and maintenance windows: the API, matching with the rules' matcher language, expiry, tenants, and
the chat command's core function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import commands
from core.clock import ManualClock
from core.models.people import Actor
from core.silences import SilenceError
from tests.conftest import TENANT_KEY, AppFactory, auth, make_config

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
BACKUP = {
    "kind": "backup.failed",
    "tenant": "acme",
    "severity": "high",
    "title": "backup failed",
    "scope": {"namespace": "prod", "labels": {"team": "storage"}},
}
DEPLOY = {"kind": "deploy.failed", "tenant": "acme", "severity": "high", "title": "deploy failed"}
PEOPLE = [
    {"name": "alice", "identities": {"slack": "U0ALICE", "teams": "5E1A0000-0000-0000-0000-00000000A11C"}},
    {"name": "bob", "identities": {"slack": "U0BOB"}},
]


async def send(client: Any, event: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/events", json=event, headers=auth())
    assert resp.status == 202, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def silence(client: Any, body: dict[str, Any], key: str | None = None) -> Any:
    return await client.post("/api/v1/silences", json=body, headers=auth(key) if key else auth())


async def test_a_silence_records_but_does_not_notify_until_it_ends(app_factory: AppFactory) -> None:
    clock = ManualClock(START)
    client, _ = await app_factory(run_dispatcher=False, clock=clock)
    body = {
        "tenant": "acme",
        "matchers": {"kinds": ["backup.*"], "labels": {"team": "stor*"}},
        "duration": "2h",
        "created_by": "alice",
        "comment": "storage maintenance",
    }
    resp = await silence(client, body)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["state"] == "active" and created["ends_at"] == "2026-01-05T14:00:00Z"

    muted = await send(client, {**BACKUP, "dedup_key": "b1"})
    assert muted["deliveries"] == 0 and muted["silenced"] is True and muted["duplicate"] is False
    # Recorded all the same: the alert exists and counts the event.
    alert = await (await client.get(f"/api/v1/alerts/{muted['alert_id']}", headers=auth())).json()
    assert alert["status"] == "open" and alert["event_count"] == 1
    assert (await send(client, DEPLOY))["deliveries"] == 1
    assert (await send(client, {**BACKUP, "dedup_key": "b2", "scope": {"labels": {"team": "web"}}}))["deliveries"] == 1

    clock.advance(timedelta(hours=2))
    assert (await send(client, {**BACKUP, "dedup_key": "b3"}))["deliveries"] == 1
    listing = await (await client.get("/api/v1/silences?state=expired", headers=auth())).json()
    assert [s["id"] for s in listing["items"]] == [created["id"]]
    assert (await (await client.get("/api/v1/silences", headers=auth())).json())["items"] == []


async def test_pending_silences_and_delete_ends_one_now(app_factory: AppFactory) -> None:
    clock = ManualClock(START)
    client, _ = await app_factory(run_dispatcher=False, clock=clock)
    window = {
        "tenant": "acme",
        "matchers": {"where": [{"field": "scope.namespace", "op": "eq", "value": "prod"}]},
        "starts_at": "2026-01-05T13:00:00Z",
        "ends_at": "2026-01-05T15:00:00Z",
        "created_by": "ops",
    }
    created = await (await silence(client, window)).json()
    assert created["state"] == "pending"
    assert (await send(client, {**BACKUP, "dedup_key": "p1"}))["deliveries"] == 1
    clock.set(datetime(2026, 1, 5, 13, 30, tzinfo=UTC))
    assert (await send(client, {**BACKUP, "dedup_key": "p2"}))["silenced"] is True
    one = await (await client.get(f"/api/v1/silences/{created['id']}", headers=auth())).json()
    assert one["state"] == "active"
    assert (await client.delete(f"/api/v1/silences/{created['id']}", headers=auth())).status == 204
    assert (await send(client, {**BACKUP, "dedup_key": "p3"}))["deliveries"] == 1
    ended = await (await client.get(f"/api/v1/silences/{created['id']}", headers=auth())).json()
    assert ended["state"] == "expired" and ended["ends_at"] == "2026-01-05T13:30:00Z"
    assert (await client.delete("/api/v1/silences/sil_nope", headers=auth())).status == 404


async def test_bad_silences_name_the_field_and_tenants_are_kept_apart(app_factory: AppFactory) -> None:
    clock = ManualClock(START)
    client, _ = await app_factory(run_dispatcher=False, clock=clock)

    async def fields(body: dict[str, Any], key: str | None = None) -> tuple[int, set[str]]:
        resp = await silence(client, body, key)
        document = await resp.json()
        return resp.status, {f["field"] for f in document["error"].get("fields", [])}

    assert await fields({"tenant": "acme", "created_by": "x"}) == (422, {"duration"})
    assert await fields({"tenant": "acme", "created_by": "x", "duration": "soon"}) == (422, {"duration"})
    status, bad = await fields(
        {"tenant": "acme", "created_by": "x", "duration": "1h", "matchers": {"where": [{"field": "x", "op": "regex"}]}}
    )
    assert status == 422 and bad == {"matchers.where[0]"}
    past = {"tenant": "acme", "created_by": "x", "ends_at": "2025-01-01T00:00:00Z"}
    assert await fields(past) == (422, {"ends_at"})
    assert await fields({"tenant": "acme", "created_by": "x", "duration": "400d"}) == (422, {"ends_at"})
    assert await fields({"tenant": "acme", "created_by": "x", "duration": "1h", "alert_id": "alr_nope"}) == (
        422,
        {"alert_id"},
    )
    # The tenant key may not write silences (notify.admin), nor silence every tenant.
    assert (await silence(client, {"created_by": "x", "duration": "1h"}, TENANT_KEY)).status == 403
    everyone = await silence(client, {"tenant": "*", "created_by": "x", "duration": "1h"})
    assert everyone.status == 201
    listing = await (await client.get("/api/v1/silences", headers=auth(TENANT_KEY))).json()
    assert [s["tenant"] for s in listing["items"]] == ["*"]
    other = await (await silence(client, {"tenant": "other", "created_by": "x", "duration": "1h"})).json()
    assert (await client.get(f"/api/v1/silences/{other['id']}", headers=auth(TENANT_KEY))).status == 404


async def test_the_chat_silence_command(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(START)
    config = make_config(
        database_url,
        people=PEOPLE,
        groups=[{"name": "oncall", "members": ["alice"]}],
        noise={"silence_approvers": ["oncall"]},
    )
    client, runtime = await app_factory(config, run_dispatcher=False, clock=clock)
    fired = await send(client, BACKUP)
    alice = Actor(platform="slack", id="U0ALICE", display_name="Alice")

    with pytest.raises(commands.NotAllowed):
        await commands.silence(
            runtime=runtime, alert_id=fired["alert_id"], duration="2h", actor=Actor(platform="slack", id="U0BOB")
        )
    with pytest.raises(commands.NotAllowed):
        await commands.silence(
            runtime=runtime, alert_id=fired["alert_id"], duration="2h", actor=Actor(platform="slack", id="U0EVE")
        )
    with pytest.raises(SilenceError) as bad:
        await commands.silence(runtime=runtime, alert_id=fired["alert_id"], duration="forever", actor=alice)
    assert bad.value.field == "duration"
    with pytest.raises(commands.UnknownAlert):
        await commands.silence(runtime=runtime, alert_id="alr_nope", duration="2h", actor=alice)

    created = await commands.silence(runtime=runtime, alert_id=fired["alert_id"], duration="2h", actor=alice)
    assert created.created_by == "alice" and created.alert_id == fired["alert_id"] and created.tenant == "acme"
    assert created.ends_at == START + timedelta(hours=2) and "slack" in created.comment
    # Teams identities resolve too (AAD object ids compare without case).
    teams = Actor(platform="teams", id="5e1a0000-0000-0000-0000-00000000a11c")
    assert (await commands.silence(runtime=runtime, alert_id=fired["alert_id"], duration="1h", actor=teams)).id

    # The silence holds the alert's identity: a repeat, and a re-fire after a resolve, stay quiet; others do not.
    assert (await send(client, BACKUP))["silenced"] is True
    assert (await send(client, {**BACKUP, "status": "resolved"}))["silenced"] is True
    refired = await send(client, BACKUP)
    assert refired["alert_id"] != fired["alert_id"] and refired["silenced"] is True
    assert (await send(client, {**BACKUP, "title": "backup failed on db-2"}))["deliveries"] == 1


async def test_each_replica_sees_a_silence_written_by_another_at_once(migrated_db: Any) -> None:
    from core.silences import SilenceIn, SilenceMatcher, create
    from core.store import silences as silence_store

    here, there = SilenceMatcher(), SilenceMatcher()
    async with migrated_db.read() as session:
        assert await here.in_force(session=session, tenant="acme", now=START) == []
        assert await silence_store.revision(session=session) == 0
    async with migrated_db.transaction() as session:
        spec = SilenceIn(matchers={"kinds": ["backup.*"]}, duration="1h", created_by="x")
        made = await create(session=session, db=migrated_db, spec=spec, tenant="acme", now=START)
    async with migrated_db.read() as session:
        assert [s.id for s in await here.in_force(session=session, tenant="acme", now=START)] == [made.id]
        assert await there.in_force(session=session, tenant="other", now=START) == []
        # The clock alone ends it, without a reload.
        assert await here.in_force(session=session, tenant="acme", now=START + timedelta(hours=1)) == []
    async with migrated_db.transaction() as session:
        assert await silence_store.expire(session=session, db=migrated_db, silence_id=made.id, now=START)
        assert await silence_store.revision(session=session) == 2
    async with migrated_db.read() as session:
        assert await here.in_force(session=session, tenant="acme", now=START) == []
