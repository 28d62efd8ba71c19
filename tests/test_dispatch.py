"""The delivery engine against real local receivers: signatures, retries, Retry-After, dead letters, pacing,
fault isolation, restarts, and the delivery and channel APIs."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from core.channels import signing
from core.clock import ManualClock
from core.dispatch import CLAIM_SPACING
from core.models.deliveries import DeliveryStatus
from core.store import deliveries as delivery_store
from core.store import migrate
from core.store.db import Database
from core.store.tables import DeliveryAttemptRow, DeliveryRow
from tests.conftest import API_KEY, AppFactory, auth, make_config
from tests.peers.http_sink import HttpSink, Reply
from tests.statements import recorded_calls, recorded_statements

SECRET = "whsec-test-0123456789"
EVENT = {"kind": "deploy.failed", "tenant": "acme", "severity": "high", "title": "deploy of api failed"}


def webhook(name: str, url: str, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "webhook",
        "settings": {"url": url, "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET", "allow_private": True, **settings},
    }


def config_with(database_url: str, channels: list[dict[str, Any]], **kw: Any) -> Any:
    names = [c["name"] for c in channels]
    rules = [{"name": "to-all", "actions": [{"channel": n} for n in names]}]
    return make_config(database_url, channels=channels, rules=rules, **kw)


async def statuses(runtime: Any) -> dict[str, str]:
    async with runtime.db.read() as session:
        rows = (await session.execute(select(DeliveryRow.channel, DeliveryRow.status))).all()
    return {channel: status for channel, status in rows}


async def test_event_reaches_the_webhook_signed(app_factory: AppFactory, database_url: str) -> None:
    async with HttpSink(Reply(200)) as sink:
        client, runtime = await app_factory(config_with(database_url, [webhook("hook", sink.url("/in"))]))
        resp = await client.post("/api/v1/events", json=EVENT, headers=auth())
        assert resp.status == 202
        async with asyncio.timeout(10):
            (received,) = await sink.wait_for(1)
        signing.verify(SECRET, received.body, received.headers["X-Ackbot-Signature"])
        body = received.json()
        assert body["type"] == "notify" and body["alert"]["title"] == "deploy of api failed"
        assert received.headers["X-Ackbot-Delivery-Id"] == body["idempotency_key"]
        assert received.headers["X-Ackbot-Origin"] == runtime.origin
        for _ in range(100):
            if (await statuses(runtime)).get("hook") == "sent":
                break
            await asyncio.sleep(0.02)
        listing = await (await client.get("/api/v1/deliveries?status=sent", headers=auth())).json()
        (delivery,) = listing["items"]
        detail = await (await client.get(f"/api/v1/deliveries/{delivery['id']}", headers=auth())).json()
        assert [a["outcome"] for a in detail["history"]] == ["sent"]
        assert detail["history"][0]["status_code"] == 200
        metrics = await (await client.get("/metrics")).text()
        assert 'ackbot_deliveries_total{channel="hook",status="sent"} 1.0' in metrics
        assert 'ackbot_delivery_latency_seconds_count{channel="hook"} 1.0' in metrics


async def test_our_own_origin_is_refused(app_factory: AppFactory) -> None:
    client, runtime = await app_factory(run_dispatcher=False)
    headers = {**auth(), "X-Ackbot-Origin": runtime.origin}
    assert (await client.post("/api/v1/events", json=EVENT, headers=headers)).status == 409


async def test_one_channel_down_while_three_deliver(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock()
    async with HttpSink(Reply(200)) as sink:
        sink.always(Reply(503, "down"), path="/down")
        down = webhook("down", sink.url("/down"), retry_for="1h")
        channels = [down] + [webhook(f"up{i}", sink.url(f"/up{i}")) for i in range(3)]
        client, runtime = await app_factory(config_with(database_url, channels), run_dispatcher=False, clock=clock)
        assert (await (await client.post("/api/v1/events", json=EVENT, headers=auth())).json())["deliveries"] == 4
        assert await runtime.dispatcher.run_once() == 4
        state = await statuses(runtime)
        assert state == {"down": "failed", "up0": "sent", "up1": "sent", "up2": "sent"}
        # The failing channel retries with backoff for its retry_for (an hour: a try every ten minutes here, the
        # last at the end of the hour), then is dead; the others are untouched.
        for _ in range(20):
            clock.advance(timedelta(minutes=10))
            await runtime.dispatcher.run_once()
        state = await statuses(runtime)
        assert state["down"] == "dead" and all(state[f"up{i}"] == "sent" for i in range(3))
        paths = [r.path for r in sink.requests]
        attempts = 7
        assert paths.count("/down") == attempts
        assert sorted(p for p in paths if p != "/down") == ["/up0", "/up1", "/up2"]
        health = await (await client.get("/api/v1/channels/down/health", headers=auth())).json()
        assert health["consecutive_failures"] == attempts and health["dead"] == 1 and not health["healthy"]
        assert "HTTP 503" in health["last_error"]
        await runtime.dispatcher.refresh_gauges()
        assert 'ackbot_deliveries_dead{channel="down"} 1.0' in (await (await client.get("/metrics")).text())


async def test_retry_after_is_honoured(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock()
    async with HttpSink(Reply(200)) as sink:
        sink.enqueue(*[Reply(429, "slow down", headers={"Retry-After": "120"})] * 2)
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url())]), run_dispatcher=False, clock=clock
        )
        await client.post("/api/v1/events", json=EVENT, headers=auth())
        assert await runtime.dispatcher.run_once() == 1
        clock.advance(timedelta(seconds=119))
        assert await runtime.dispatcher.run_once() == 0
        clock.advance(timedelta(seconds=1))
        assert await runtime.dispatcher.run_once() == 1
        clock.advance(timedelta(seconds=120))
        assert await runtime.dispatcher.run_once() == 1
        assert len(sink.requests) == 3
        async with runtime.db.read() as session:
            codes = (
                await session.execute(select(DeliveryAttemptRow.status_code).order_by(DeliveryAttemptRow.id))
            ).scalars()
            assert list(codes) == [429, 429, 200]
        assert (await statuses(runtime))["hook"] == "sent"
        assert 'ackbot_rate_limited_total{channel="hook"} 2.0' in (await (await client.get("/metrics")).text())


async def test_permanent_error_dead_at_once_then_retried_by_hand(app_factory: AppFactory, database_url: str) -> None:
    async with HttpSink(Reply(200)) as sink:
        sink.enqueue(Reply(400, "bad payload"))
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url())]), run_dispatcher=False
        )
        await client.post("/api/v1/events", json=EVENT, headers=auth())
        await runtime.dispatcher.run_once()
        (dead,) = (await (await client.get("/api/v1/deliveries?status=dead", headers=auth())).json())["items"]
        detail = await (await client.get(f"/api/v1/deliveries/{dead['id']}", headers=auth())).json()
        assert detail["history"][0]["outcome"] == "permanent" and "HTTP 400" in detail["history"][0]["error"]
        assert SECRET not in str(detail)
        assert (await client.post(f"/api/v1/deliveries/{dead['id']}/retry", headers=auth())).status == 202
        assert (await client.post(f"/api/v1/deliveries/{dead['id']}/retry", headers=auth())).status == 409
        assert (await client.post("/api/v1/deliveries/dlv_none/retry", headers=auth())).status == 404
        await runtime.dispatcher.run_once()
        assert (await statuses(runtime))["hook"] == "sent"


async def test_a_burst_to_one_destination_is_paced_and_nothing_is_lost(
    app_factory: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rate = 100
    async with HttpSink(Reply(200, "ok")) as sink:
        monkeypatch.setenv("ACKBOT_TEST_SLACK_HOOK", sink.url("/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"))
        channel = {
            "name": "slack",
            "type": "slack_webhook",
            "settings": {"url": "env:ACKBOT_TEST_SLACK_HOOK", "allow_private": True, "rate_per_second": rate},
        }
        client, runtime = await app_factory(
            config_with(database_url, [channel], dispatch={"workers": 8, "poll_interval": 0.02})
        )
        batch = [{**EVENT, "dedup_key": f"burst-{i}"} for i in range(300)]
        assert (await client.post("/api/v1/events", json=batch, headers=auth())).status == 202
        async with asyncio.timeout(30):
            await sink.wait_for(300)
        await asyncio.sleep(0.2)
        assert len(sink.requests) == 300
        async with runtime.db.read() as session:
            attempts = (await session.execute(select(DeliveryAttemptRow.finished_at))).scalars().all()
        assert len(attempts) == 300
        # What the receiver sees: never more than the rate (plus the one-message burst allowance) arriving inside
        # any one-second window. (Attempts' finish times would also count how the answers came back.)
        arrived = sorted(request.at for request in sink.requests)
        busiest = max(sum(1 for t in arrived[i:] if t - start < 1.0) for i, start in enumerate(arrived))
        assert busiest <= rate + 5, busiest
        assert arrived[-1] - arrived[0] >= (300 / rate) - 1.2


async def test_a_stream_of_work_is_claimed_in_spaced_batches_and_a_lone_event_at_once(
    app_factory: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    claims: list[tuple[float, int]] = []  # (when the claim started, rows it took)
    real_claim = delivery_store.claim

    async def timed_claim(**kwargs: Any) -> list[DeliveryRow]:
        started = loop.time()
        rows = await real_claim(**kwargs)
        claims.append((started, len(rows)))
        return rows

    monkeypatch.setattr(delivery_store, "claim", timed_claim)
    async with HttpSink(Reply(200)) as sink:
        client, _runtime = await app_factory(
            config_with(
                database_url,
                [webhook("hook", sink.url("/in"), rate_per_second=1000)],  # no pacing: each row is claimed once
                dispatch={"workers": 8, "poll_interval": 1},
            )
        )
        # After a quiet spell, one event goes out at once (long before the 1 s poll).
        await asyncio.sleep(0.1)
        started = loop.time()
        assert (await client.post("/api/v1/events", json={**EVENT, "dedup_key": "lone"}, headers=auth())).status == 202
        async with asyncio.timeout(10):
            await sink.wait_for(1)
        assert loop.time() - started < 0.5
        # A stream: every commit wakes the claimer, but claims start at least CLAIM_SPACING apart, and what came
        # due meanwhile goes in one claim.
        claims.clear()
        for n in range(40):
            body = {**EVENT, "dedup_key": f"stream-{n}"}
            assert (await client.post("/api/v1/events", json=body, headers=auth())).status == 202
            await asyncio.sleep(0.003)
        async with asyncio.timeout(10):
            await sink.wait_for(41)
        assert sum(taken for _, taken in claims) == 40
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(claims)]
        assert min(gaps) >= CLAIM_SPACING * 0.9, gaps
        assert max(taken for _, taken in claims) > 1


async def test_restart_resumes_retries_and_reclaims_abandoned_work(database_url: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bot.app import build_runtime, create_app

    clock = ManualClock()
    async with HttpSink(Reply(200)) as sink:
        sink.enqueue(Reply(503))
        config = config_with(database_url, [webhook("hook", sink.url())])
        first = build_runtime(config, clock=clock, run_dispatcher=False)
        client = TestClient(TestServer(create_app(first)))
        await client.start_server()
        results = await (
            await client.post(
                "/api/v1/events", json=[{**EVENT, "dedup_key": f"r{i}"} for i in range(2)], headers=auth()
            )
        ).json()
        assert [r["deliveries"] for r in results] == [1, 1]
        # One delivery fails an attempt; the other is claimed by a worker that then dies without settling it.
        rows = await delivery_store.claim(
            db=first.db, worker="w", now=clock.now(), lease=timedelta(seconds=60), limit=1
        )
        await first.dispatcher.process(rows[0])
        abandoned = await delivery_store.claim(
            db=first.db, worker="dead", now=clock.now(), lease=timedelta(seconds=60), limit=1
        )
        assert len(abandoned) == 1
        await client.close()

        clock.advance(timedelta(seconds=61))
        second = build_runtime(config, clock=clock, run_dispatcher=False)
        client = TestClient(TestServer(create_app(second)))
        await client.start_server()
        try:
            assert await second.dispatcher.run_once() == 2
            assert set((await statuses(second)).values()) == {"sent"}
            assert len(sink.requests) == 3
        finally:
            await client.close()


async def test_channels_api(app_factory: AppFactory, database_url: str) -> None:
    async with HttpSink(Reply(200)) as sink:
        client, runtime = await app_factory(run_dispatcher=False)
        new = webhook("ops-hook", sink.url("/ops"))
        resp = await client.post("/api/v1/channels", json=new, headers=auth())
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["in_service"] is True and "ops-hook" in runtime.channels
        assert (await client.post("/api/v1/channels", json=new, headers=auth())).status == 409
        names = [c["name"] for c in (await (await client.get("/api/v1/channels", headers=auth())).json())["items"]]
        assert names == ["console", "ops-hook"]

        tested = await (await client.post("/api/v1/channels/ops-hook/test", headers=auth())).json()
        assert tested["ok"] is True and tested["status_code"] == 200
        assert sink.requests[-1].json()["type"] == "test"
        sink.enqueue(Reply(500, "boom"))
        failed = await (await client.post("/api/v1/channels/ops-hook/test", headers=auth())).json()
        assert failed["ok"] is False and "HTTP 500" in failed["error"]
        health = await (await client.get("/api/v1/channels/ops-hook/health", headers=auth())).json()
        assert health["last_success"] and health["last_failure"] and health["consecutive_failures"] == 1

        bad = await client.patch("/api/v1/channels/ops-hook", json={"settings": {"method": "DELETE"}}, headers=auth())
        assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "settings.method"
        ok = await client.patch("/api/v1/channels/ops-hook", json={"settings": {"method": "PUT"}}, headers=auth())
        assert ok.status == 200 and (await ok.json())["settings"]["method"] == "PUT"
        assert (await client.patch("/api/v1/channels/console", json={"enabled": False}, headers=auth())).status == 409
        unknown = await client.post("/api/v1/channels", json={"name": "x", "type": "fax"}, headers=auth())
        assert unknown.status == 422 and (await unknown.json())["error"]["fields"][0]["field"] == "type"
        assert (await client.delete("/api/v1/channels/ops-hook", headers=auth())).status == 204
        assert "ops-hook" not in runtime.channels
        assert (await client.get("/api/v1/channels/ops-hook", headers=auth())).status == 404
        assert (await client.post("/api/v1/channels", json=new, headers=auth(API_KEY))).status == 201


def test_send_test_cli(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    path = tmp_path / "c.yml"
    path.write_text(
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path}/a.db'}}\nchannels: [{{name: console, type: console}}]\n"
    )
    assert main(["send-test", "console", "--config", str(path)]) == 0
    assert "console: delivered" in capsys.readouterr().out
    assert main(["send-test", "nope", "--config", str(path)]) == 2
    assert "no channel named 'nope'" in capsys.readouterr().err


async def test_test_sends_are_not_taken_by_running_workers(app_factory: AppFactory, database_url: str) -> None:
    async with HttpSink(Reply(200)) as sink:
        client, _ = await app_factory(
            config_with(database_url, [webhook("hook", sink.url())], dispatch={"workers": 8, "poll_interval": 0.001})
        )
        for _ in range(10):
            outcome = await (await client.post("/api/v1/channels/hook/test", headers=auth())).json()
            assert outcome["ok"] is True, outcome
        assert len(sink.requests) == 10


async def test_outcomes_are_recorded_together_and_a_lost_lease_is_refused(migrated_db: Any) -> None:
    db = migrated_db
    now = ManualClock().now()
    async with db.transaction() as session:
        for n in range(4):
            key = f"batch-{n}"
            session.add(delivery_store.new_delivery(tenant="acme", channel="hook", idempotency_key=key, now=now))
    claimed = await delivery_store.claim(db=db, worker="w1", now=now, lease=timedelta(minutes=1), limit=10)
    assert len(claimed) == 4
    first, second, third, fourth = sorted(claimed, key=lambda r: r.idempotency_key)
    # Another worker takes the fourth once our lease has run out: our outcome for it must not be recorded.
    later = now + timedelta(minutes=2)
    async with db.transaction() as session:
        await session.execute(
            update(DeliveryRow).where(DeliveryRow.id == fourth.id).values(lease_until=now - timedelta(seconds=1))
        )
    (taken,) = await delivery_store.claim(db=db, worker="w2", now=now, lease=timedelta(minutes=5), limit=10)
    assert taken.id == fourth.id
    settlements = [
        delivery_store.Settlement(
            delivery_id=first.id,
            started_at=now,
            now=later,
            outcome="sent",
            status=DeliveryStatus.sent,
            status_code=200,
            message_ref={"ts": "1"},
        ),
        delivery_store.Settlement(
            delivery_id=second.id,
            started_at=now,
            now=later,
            outcome="sent",
            status=DeliveryStatus.sent,
            status_code=200,
            message_ref={"ts": "2"},
        ),
        delivery_store.Settlement(
            delivery_id=third.id,
            started_at=now,
            now=later,
            outcome="retry",
            status=DeliveryStatus.failed,
            next_attempt_at=later + timedelta(seconds=5),
            status_code=503,
            error="down",
        ),
        delivery_store.Settlement(
            delivery_id=fourth.id,
            started_at=now,
            now=later,
            outcome="sent",
            status=DeliveryStatus.sent,
            message_ref={"ts": "4"},
        ),
    ]
    async with recorded_statements(db) as sent:
        settled = await delivery_store.settle_many(db=db, worker="w1", settlements=settlements)
    statements = [s.split()[0].upper() for s in sent]
    assert settled == {first.id, second.id, third.id}
    if db.is_postgres:
        # The whole batch, whatever its outcomes, is one statement that commits by itself: one round trip.
        assert statements == ["WITH"]
    else:
        # The two sent ones in one UPDATE and their message refs in one executemany, the failure in its own UPDATE,
        # every attempt row in one INSERT: a constant number of statements, each built once.
        assert [s for s in statements if s in ("UPDATE", "INSERT")] == ["UPDATE", "UPDATE", "UPDATE", "INSERT"]
    async with db.read() as session:
        rows = {r.id: r for r in (await session.execute(select(DeliveryRow))).scalars()}
        attempts = (await session.execute(select(DeliveryAttemptRow))).scalars().all()
    assert rows[first.id].message_ref == {"ts": "1"} and rows[second.id].message_ref == {"ts": "2"}
    assert rows[first.id].status == "sent" and rows[first.id].attempts == 1 and rows[first.id].claimed_by is None
    assert rows[third.id].status == "failed" and rows[third.id].last_error == "down"
    assert rows[fourth.id].status == "sending" and rows[fourth.id].claimed_by == "w2"
    assert rows[fourth.id].message_ref is None
    assert sorted((a.delivery_id, a.number, a.outcome) for a in attempts) == sorted(
        [(first.id, 1, "sent"), (second.id, 1, "sent"), (third.id, 1, "retry")]
    )


async def test_an_outcome_with_a_nul_byte_or_a_naive_time_is_still_recorded(migrated_db: Any) -> None:
    db = migrated_db
    now = ManualClock().now()
    async with db.transaction() as session:
        session.add(delivery_store.new_delivery(tenant="acme", channel="hook", idempotency_key="nul", now=now))
    (row,) = await delivery_store.claim(db=db, worker="w1", now=now, lease=timedelta(minutes=1), limit=1)
    naive_later = (now + timedelta(seconds=30)).astimezone(UTC).replace(tzinfo=None)
    failure = delivery_store.Settlement(
        delivery_id=row.id,
        started_at=now,
        now=naive_later,
        outcome="retry",
        status=DeliveryStatus.failed,
        next_attempt_at=naive_later + timedelta(seconds=5),
        status_code=502,
        error="bad gateway: \x00 in the body",
    )
    # A receiver's error text must never keep its delivery from settling (it would be sent again and again).
    assert await delivery_store.settle_many(db=db, worker="w1", settlements=[failure]) == {row.id}
    async with db.read() as session:
        stored = (await session.execute(select(DeliveryRow).where(DeliveryRow.id == row.id))).scalar_one()
    assert stored.status == "failed" and stored.last_error is not None
    assert stored.last_error.replace("\x00", "") == "bad gateway:  in the body"
    # Naive times are UTC, whatever the server's time zone.
    assert stored.next_attempt_at == now + timedelta(seconds=35)


async def plan_with_history(sqlite_url: str, marker: str, run: Any, *, analyze: bool = True) -> list[str]:
    """SQLite's plan for the statement containing marker that run(db) sends, over a history of sent deliveries.

    With statistics that say so (SQLite's ANALYZE; PostgreSQL's autovacuum gathers its own), a lookup that cannot
    use an index is planned as a scan of every delivery ever made.
    """
    db = Database(sqlite_url)
    await migrate.upgrade(db)
    path = sqlite_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        at = "2026-01-01 00:00:00.000000"
        conn.executemany(
            "INSERT INTO deliveries (id, tenant, channel, purpose, idempotency_key, status, attempts, suppressed_count,"
            " next_attempt_at, created_at, updated_at) VALUES (?, 'acme', 'hook', 'notify', ?, 'sent', 1, 0, ?, ?, ?)",
            [(f"dlv_{n:08d}", f"key-{n}", at, at, at) for n in range(3000)],
        )
        if analyze:
            conn.execute("ANALYZE")
    try:
        async with recorded_calls(db) as calls:
            await run(db)
    finally:
        await db.close()
    ((statement, parameters),) = [(sql, args) for sql, args in calls if marker in sql]
    with sqlite3.connect(path) as conn:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters)]


async def test_a_claim_finds_due_rows_by_index_instead_of_scanning_every_delivery(sqlite_url: str) -> None:
    async def claim(db: Database) -> None:
        await delivery_store.claim(db=db, worker="w1", now=datetime.now(UTC), lease=timedelta(seconds=60), limit=8)

    plan = await plan_with_history(sqlite_url, "UPDATE deliveries SET status", claim)
    assert not [step for step in plan if step.startswith("SCAN deliveries")], plan
    assert sum("USING INDEX ix_deliveries_status_next_attempt_at" in step for step in plan) >= 2, plan


async def test_the_dead_letter_gauge_reads_only_dead_deliveries(sqlite_url: str) -> None:
    async def count(db: Database) -> None:
        async with db.read() as session:
            assert await delivery_store.count_dead(session=session) == {}

    # SQLite's statistics hold no values (ackbot never gathers them there); PostgreSQL's know "dead" is rare.
    plan = await plan_with_history(sqlite_url, "count(*)", count, analyze=False)
    assert not [step for step in plan if step.startswith("SCAN deliveries")], plan
