"""Digests: durable windows that flush exactly once (also when schedulers race), survive restarts, and render
on every channel."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.app import build_runtime, create_app
from bot.cards import slack as slack_cards
from bot.cards import teams as teams_cards
from core import digests
from core.channels.base import ChannelContext
from core.channels.console import ConsoleChannel
from core.channels.email import EmailChannel, EmailSettings
from core.channels.webhook import build_payload
from core.clock import ManualClock
from core.models.rules import Action
from core.store.db import Database
from core.store.tables import DeliveryRow, DigestWindowRow
from tests.conftest import AppFactory, auth, make_config
from tests.peers.http_sink import HttpSink, Reply
from tests.test_cards_slack import assert_valid as assert_valid_blocks
from tests.test_cards_teams import assert_valid as assert_valid_card

START = datetime(2026, 1, 5, 12, 10, tzinfo=UTC)


def webhook(url: str) -> dict[str, Any]:
    settings = {"url": url, "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET", "allow_private": True}
    return {"name": "hook", "type": "webhook", "settings": settings}


def digest_config(database_url: str, url: str = "http://127.0.0.1:9/none", **options: Any) -> Any:
    action = {
        "channel": "hook",
        "digest": "hourly",
        "digest_options": {"group_by": ["severity", "namespace"], "top": 2, **options},
    }
    return make_config(
        database_url,
        channels=[webhook(url), {"name": "console", "type": "console"}],
        rules=[{"name": "noisy", "actions": [action]}],
    )


def event(key: str, severity: str = "high", namespace: str = "prod", tenant: str = "acme") -> dict[str, Any]:
    return {
        "kind": "disk.usage",
        "tenant": tenant,
        "severity": severity,
        "title": f"disk usage {key}",
        "dedup_key": key,
        "scope": {"namespace": namespace},
    }


async def digest_rows(runtime: Any) -> list[DeliveryRow]:
    async with runtime.db.read() as session:
        query = select(DeliveryRow).where(DeliveryRow.purpose == "digest").order_by(DeliveryRow.created_at)
        return list((await session.execute(query)).scalars())


async def post(client: Any, *events: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await client.post("/api/v1/events", json=list(events), headers=auth())
    assert resp.status == 202, await resp.text()
    result: list[dict[str, Any]] = await resp.json()
    return result


def test_schedules_and_options_are_validated() -> None:
    assert digests.window_bounds(schedule="hourly", timezone="UTC", now=START) == (
        datetime(2026, 1, 5, 12, tzinfo=UTC),
        datetime(2026, 1, 5, 13, tzinfo=UTC),
    )
    # "daily" is 09:00 in the digest's timezone: 08:00 UTC in Berlin's winter.
    _, end = digests.window_bounds(schedule="daily", timezone="Europe/Berlin", now=START)
    assert end == datetime(2026, 1, 6, 8, tzinfo=UTC)
    _, end = digests.window_bounds(schedule="*/15 * * * *", timezone="UTC", now=START)
    assert end == datetime(2026, 1, 5, 12, 15, tzinfo=UTC)
    for bad in ({"digest": "sometimes"}, {"digest": "hourly", "for": "5m"}, {"digest_options": {"top": 3}}):
        with pytest.raises(ValueError):
            Action.model_validate({"channel": "c", **bad})
    with pytest.raises(ValueError, match="group by"):
        Action.model_validate({"channel": "c", "digest": "daily", "digest_options": {"group_by": ["colour"]}})


async def test_window_flushes_once_with_the_right_counts(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(START)
    async with HttpSink(Reply(200)) as sink:
        client, runtime = await app_factory(digest_config(database_url, sink.url()), run_dispatcher=False, clock=clock)
        results = await post(
            client,
            event("a"),
            event("b", "medium"),
            event("c", "high", "staging"),
            event("a"),
            event("a"),
        )
        assert [r["deliveries"] for r in results] == [0] * 5 and not any(r["duplicate"] for r in results)
        assert runtime.noise is not None
        clock.set(datetime(2026, 1, 5, 12, 59, 59, tzinfo=UTC))
        assert (await runtime.noise.tick()).digests == []
        clock.set(datetime(2026, 1, 5, 13, 0, tzinfo=UTC))
        assert len((await runtime.noise.tick()).digests) == 1
        assert (await runtime.noise.tick()).digests == []  # flushed exactly once
        assert await runtime.dispatcher.run_once() == 1
        (received,) = sink.requests
        body = received.json()
        assert body["type"] == "digest" and body["title"] == "noisy digest"
        digest = body["digest"]
        assert digest["total"] == 3 and digest["events"] == 5 and digest["reason"] == "schedule"
        assert digest["groups"] == {
            "severity: high · namespace: prod": 1,
            "severity: medium · namespace: prod": 1,
            "severity: high · namespace: staging": 1,
        }
        # The top 2: both high ones, the most repeated first; "and 1 more" links to the whole window.
        assert [(i["title"], i["digest_events"]) for i in digest["items"]] == [
            ("disk usage a", 3),
            ("disk usage c", 1),
        ]
        assert digest["more"] == 1 and digest["link"] == f"http://ackbot.test/api/v1/digests/{digest['window_id']}"
        assert "and 1 more" in body["summary"]
        window = await (await client.get(f"/api/v1/digests/{digest['window_id']}", headers=auth())).json()
        assert window["status"] == "flushed" and len(window["alerts"]) == 3 and window["events"] == 5
        # The next event opens the next window.
        await post(client, event("d"))
        listing = await (await client.get("/api/v1/digests?status=open", headers=auth())).json()
        assert [w["window_end"] for w in listing["items"]] == ["2026-01-05T14:00:00+00:00"]


async def test_two_schedulers_racing_flush_each_window_once(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(START)
    client, runtime = await app_factory(digest_config(database_url), run_dispatcher=False, clock=clock)
    # Twelve tenants: twelve windows closing at the same instant.
    await post(client, *[event(f"k{i}", tenant=f"t{i % 12}") for i in range(36)])
    clock.set(datetime(2026, 1, 5, 13, tzinfo=UTC))
    replicas = [Database(database_url) for _ in range(4)]
    try:
        flushed = await asyncio.gather(
            *[digests.flush_due(db=db, now=clock.now(), worker=f"r{n}", public_url="") for n, db in enumerate(replicas)]
        )
    finally:
        for db in replicas:
            await db.close()
    assert sum(len(ids) for ids in flushed) == 12
    rows = await digest_rows(runtime)
    assert len(rows) == 12 and len({row.tenant for row in rows}) == 12
    assert all(row.extra is not None and row.extra["digest"]["total"] == 3 for row in rows)
    async with runtime.db.read() as session:
        counts = (await session.execute(select(DigestWindowRow.status, func.count()).group_by("status"))).all()
    assert dict(counts) == {"flushed": 12}


async def test_a_restart_in_the_middle_of_a_window_keeps_the_digest(database_url: str) -> None:
    clock = ManualClock(START)
    config = digest_config(database_url)
    first = build_runtime(config, clock=clock, run_dispatcher=False)
    client = TestClient(TestServer(create_app(first)))
    await client.start_server()
    await post(client, event("a"), event("b"))
    await client.close()

    clock.advance(timedelta(minutes=20))
    second = build_runtime(config, clock=clock, run_dispatcher=False)
    client = TestClient(TestServer(create_app(second)))
    await client.start_server()
    try:
        await post(client, event("c"))
        clock.set(datetime(2026, 1, 5, 13, 0, 5, tzinfo=UTC))
        assert second.noise is not None
        assert len((await second.noise.tick()).digests) == 1
        (row,) = await digest_rows(second)
        assert row.extra is not None and row.extra["digest"]["total"] == 3
    finally:
        await client.close()


async def test_a_full_window_flushes_at_once(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(START)
    client, runtime = await app_factory(digest_config(database_url, max_items=2), run_dispatcher=False, clock=clock)
    await post(client, event("a"), event("a"), event("b"))
    (row,) = await digest_rows(runtime)
    assert row.extra is not None and row.extra["digest"]["reason"] == "full"
    assert row.extra["digest"]["total"] == 2 and row.extra["digest"]["events"] == 3
    # The next alert opens a new window for the same hour, which flushes on schedule.
    await post(client, event("c"))
    clock.set(datetime(2026, 1, 5, 13, tzinfo=UTC))
    assert runtime.noise is not None
    assert len((await runtime.noise.tick()).digests) == 1
    assert [r.extra["digest"]["total"] for r in await digest_rows(runtime) if r.extra] == [2, 1]


async def test_digest_renders_on_every_channel(
    app_factory: AppFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(START)
    client, runtime = await app_factory(digest_config(database_url), run_dispatcher=False, clock=clock)
    await post(client, *[event(f"<b>k{i}</b>", ["high", "low", "critical"][i % 3]) for i in range(7)])
    clock.set(datetime(2026, 1, 5, 13, tzinfo=UTC))
    assert runtime.noise is not None
    await runtime.noise.tick()
    (row,) = await digest_rows(runtime)
    note = await runtime.dispatcher.build_notification(row)
    assert note.title == "noisy digest" and note.status == "digest"

    message = slack_cards.render(note)
    assert_valid_blocks(message)
    assert message["text"].startswith("📬 noisy digest: 7 alerts")
    assert any("and 5 more" in str(block) for block in message["blocks"])
    card = teams_cards.render(note)
    assert_valid_card(card)
    assert "7** alerts in this digest" in str(card)
    assert_valid_card(teams_cards.render_for_workflows(note), teams_cards.WORKFLOWS_CARD_MAX_BYTES)

    payload = build_payload(note)
    assert payload["type"] == "digest" and payload["digest"]["total"] == 7 and "report" not in payload

    console = ConsoleChannel("console", ConsoleChannel.Settings(), ChannelContext())
    with caplog.at_level(logging.INFO, logger="ackbot.console"):
        await console.send(note)
    assert '"7 alerts (7 events) until 2026-01-05T13:00:00+00:00"' in caplog.text

    email = EmailChannel(
        "mail",
        EmailSettings.model_validate({"host": "127.0.0.1", "from": "ackbot@example.com", "to": ["ops@example.com"]}),
        ChannelContext(),
    )
    html = email.render_html(note)
    assert "<table" in html and "&lt;b&gt;k2&lt;/b&gt;" in html and "<b>k2" not in html
    assert "7 alerts (7 events)" in email.render_text(note)


def test_a_closing_time_inside_quiet_hours_moves_past_them() -> None:
    from core.models.rules import QuietHours
    from core.quiet_hours import Layer

    night = Layer("global", (QuietHours(window="22:00-06:00", timezone="Europe/Berlin"),))
    at = datetime(2026, 3, 28, 21, 30, tzinfo=UTC)  # 22:30 in Berlin, the night the clocks go forward
    start, end = digests.window_bounds(schedule="hourly", timezone="UTC", now=at, quiet=[night])
    assert start == datetime(2026, 3, 28, 21, tzinfo=UTC)
    assert end == datetime(2026, 3, 29, 4, tzinfo=UTC)  # 06:00 CEST, the first hour after the night
    # A window with min_severity info holds nothing back, so it moves nothing.
    open_night = Layer("global", (QuietHours(window="22:00-06:00", timezone="Europe/Berlin", min_severity="info"),))
    _, end = digests.window_bounds(schedule="hourly", timezone="UTC", now=at, quiet=[open_night])
    assert end == datetime(2026, 3, 28, 22, tzinfo=UTC)
