"""Throttle with "N similar suppressed", wait-before-notify (for:) cancelled by a resolve, and the dry run that
explains every noise decision."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.cards import slack as slack_cards
from bot.cards import teams as teams_cards
from core.clock import ManualClock
from core.noise import suppressed_phrase
from core.store.tables import DeliveryRow
from tests.conftest import AppFactory, auth, make_config
from tests.peers.http_sink import HttpSink, Reply

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
EVENT = {
    "kind": "backup.failed",
    "tenant": "acme",
    "severity": "high",
    "title": "nightly backup failed",
    "dedup_key": "backup-db-1",
}


def webhook(url: str) -> dict[str, Any]:
    settings = {"url": url, "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET", "allow_private": True}
    return {"name": "hook", "type": "webhook", "settings": settings}


async def rows(runtime: Any) -> list[DeliveryRow]:
    async with runtime.db.read() as session:
        return list((await session.execute(select(DeliveryRow).order_by(DeliveryRow.created_at))).scalars())


async def send(client: Any, event: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/events", json=event, headers=auth())
    assert resp.status == 202, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


def test_suppressed_phrase() -> None:
    assert suppressed_phrase(14, timedelta(hours=1)) == "14 similar suppressed in the last hour"
    assert suppressed_phrase(3, timedelta(minutes=15)) == "3 similar suppressed in the last 15m"
    assert suppressed_phrase(2, timedelta(days=1)) == "2 similar suppressed in the last day"


async def test_throttle_counts_what_it_suppresses_and_the_next_message_says_so(
    app_factory: AppFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(START)
    async with HttpSink(Reply(200)) as sink:
        config = make_config(
            database_url,
            channels=[webhook(sink.url()), {"name": "console", "type": "console"}],
            rules=[
                {
                    "name": "backups",
                    "actions": [{"channel": "hook", "throttle": "1h"}, {"channel": "console", "throttle": "1h"}],
                }
            ],
        )
        client, runtime = await app_factory(config, run_dispatcher=False, clock=clock)
        first = await send(client, EVENT)
        assert first["deliveries"] == 2
        for _ in range(14):
            clock.advance(timedelta(minutes=4))
            await send(client, EVENT)
        # Both hour-long throttles held back 14; the first message after the window says so.
        clock.set(START + timedelta(hours=1, minutes=1))
        again = await send(client, EVENT)
        assert again["deliveries"] == 2
        latest = (await rows(runtime))[-2:]
        hook_row = next(r for r in latest if r.channel == "hook")
        assert hook_row.suppressed_count == 14
        assert hook_row.extra == {
            "suppressed_window": "1h",
            "suppressed_text": "14 similar suppressed in the last hour",
        }
        with caplog.at_level(logging.INFO, logger="ackbot.console"):
            assert await runtime.dispatcher.run_once() == 4
        bodies = [r.json() for r in sink.requests]
        assert [b["suppressed_count"] for b in bodies] == [0, 14]
        assert bodies[1]["suppressed_text"] == "14 similar suppressed in the last hour"
        assert 'suppressed=14 "14 similar suppressed in the last hour"' in caplog.text
        # Chat cards say it too.
        note = await runtime.dispatcher.build_notification(hook_row)
        assert "14 similar suppressed in the last hour" in str(slack_cards.render(note)["blocks"])
        assert "14 similar suppressed in the last hour" in str(teams_cards.render(note))
        assert ("Suppressed", "14 similar suppressed in the last hour") in note.facts()


async def test_for_delivers_only_if_still_firing_and_a_resolve_cancels(
    app_factory: AppFactory, database_url: str
) -> None:
    clock = ManualClock(START)
    async with HttpSink(Reply(200)) as sink:
        config = make_config(
            database_url,
            channels=[webhook(sink.url())],
            rules=[{"name": "flappy", "actions": [{"channel": "hook", "for": "5m"}]}],
        )
        client, runtime = await app_factory(config, run_dispatcher=False, clock=clock)
        fired = await send(client, EVENT)
        assert fired["deliveries"] == 1
        (waiting,) = await rows(runtime)
        assert waiting.status == "pending" and waiting.next_attempt_at == START + timedelta(minutes=5)
        assert await runtime.dispatcher.run_once() == 0
        # Resolved after two minutes: the waiting notification is cancelled, and no "resolved" update follows it.
        clock.advance(timedelta(minutes=2))
        resolved = await send(client, {**EVENT, "status": "resolved"})
        assert resolved["deliveries"] == 0
        (cancelled,) = await rows(runtime)
        assert cancelled.status == "cancelled"
        clock.advance(timedelta(minutes=10))
        assert await runtime.dispatcher.run_once() == 0
        assert sink.requests == []

        # Still firing when the wait is over: it goes out, and the later resolve updates it.
        clock.advance(timedelta(hours=1))
        await send(client, EVENT)
        clock.advance(timedelta(minutes=5))
        assert await runtime.dispatcher.run_once() == 1
        clock.advance(timedelta(minutes=1))
        assert (await send(client, {**EVENT, "status": "resolved"}))["deliveries"] == 1
        assert await runtime.dispatcher.run_once() == 1
        assert [r.json()["type"] for r in sink.requests] == ["notify", "update"]
        assert [r.status for r in await rows(runtime)] == ["cancelled", "sent", "sent"]


async def test_dry_run_explains_every_noise_decision(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(datetime(2026, 1, 5, 23, 0, tzinfo=UTC))  # midnight in Berlin
    actions = [
        {"channel": "console", "throttle": "15m"},
        {"channel": "console", "digest": "daily", "digest_options": {"timezone": "Europe/Berlin"}},
        {"channel": "console", "for": "5m"},
    ]
    config = make_config(
        database_url,
        rules=[
            {"name": "ops", "actions": actions},
            {
                "name": "night",
                "quiet_hours": {"window": "22:00-06:00", "timezone": "Europe/Berlin"},
                "actions": [{"channel": "console"}],
            },
        ],
    )
    client, _ = await app_factory(config, run_dispatcher=False, clock=clock)

    async def dry_run(event: dict[str, Any]) -> list[dict[str, Any]]:
        resp = await client.post("/api/v1/rules/test", json=event, headers=auth())
        assert resp.status == 200, await resp.text()
        result: list[dict[str, Any]] = (await resp.json())["actions"]
        return result

    lines = await dry_run(EVENT)
    assert [line["outcome"] for line in lines] == ["deliver", "digest", "wait", "hold"]
    assert lines[0]["checks"]["throttle"] == {"window": "15m", "open_until": None, "suppressed": 0}
    assert lines[1]["until"] == "2026-01-06T08:00:00+00:00"  # 09:00 in Berlin
    assert lines[2]["until"] == "2026-01-05T23:05:00+00:00" and "unless resolved" in lines[2]["reason"]
    assert lines[3]["until"] == "2026-01-06T05:00:00+00:00"
    assert lines[3]["checks"]["quiet_hours"]["source"] == "rule night"

    await send(client, EVENT)
    lines = await dry_run(EVENT)
    assert lines[0]["outcome"] == "suppress" and lines[0]["until"] == "2026-01-05T23:15:00+00:00"
    assert "window open until" in lines[0]["reason"]

    resp = await client.post(
        "/api/v1/silences",
        json={"tenant": "acme", "matchers": {"kinds": ["backup.*"]}, "duration": "2h", "created_by": "ops"},
        headers=auth(),
    )
    assert resp.status == 201, await resp.text()
    lines = await dry_run(EVENT)
    assert {line["outcome"] for line in lines} == {"silence"}
    assert lines[0]["until"] == "2026-01-06T01:00:00+00:00" and "created_by" in str(lines[0]["checks"]["silence"])
