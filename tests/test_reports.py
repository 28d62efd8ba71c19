"""The scheduled report: its sections (expiring items above all), firing once across replicas, and delivery as
an HTML e-mail, a card and JSON; sent by hand from the API and the CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.cards import slack as slack_cards
from bot.cards import teams as teams_cards
from core import reports
from core.clock import ManualClock
from core.noise import NoiseScheduler
from core.store.db import Database
from core.store.tables import DeliveryRow, ReportRunRow
from tests.conftest import TENANT_KEY, AppFactory, auth, make_config
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.smtp_sink import SmtpSink
from tests.test_cards_slack import assert_valid as assert_valid_blocks
from tests.test_cards_teams import assert_valid as assert_valid_card

# Monday 2026-01-05, 07:20 in Berlin.
MONDAY = datetime(2026, 1, 5, 6, 20, tzinfo=UTC)


def expiring(title: str, expires_at: Any, **kw: Any) -> dict[str, Any]:
    return {
        "kind": "cert.expiry",
        "tenant": "acme",
        "severity": "medium",
        "title": title,
        "dedup_key": title,
        "payload": {"expires_at": expires_at},
        **kw,
    }


def report_config(database_url: str, channels: list[dict[str, Any]], **reports_settings: Any) -> Any:
    return make_config(
        database_url,
        channels=[{"name": "console", "type": "console"}, *channels],
        rules=[],
        reports={
            "schedule": "0 7 * * 1",
            "timezone": "Europe/Berlin",
            "channels": [c["name"] for c in channels] or ["console"],
            **reports_settings,
        },
    )


async def seed(client: Any, now: datetime) -> None:
    events = [
        expiring("tls api.acme.com", (now + timedelta(days=3)).isoformat().replace("+00:00", "Z")),
        expiring("db password", (now + timedelta(days=30)).isoformat()),
        expiring("<b>old cert</b>", (now - timedelta(days=1)).timestamp()),
        expiring("odd value", "next tuesday"),
        {"kind": "disk.full", "tenant": "acme", "severity": "critical", "title": "disk full", "dedup_key": "disk"},
    ]
    resp = await client.post("/api/v1/events", json=events, headers=auth())
    assert resp.status == 202, await resp.text()
    # A renewed certificate: resolved, so no longer expiring.
    renewed = expiring("tls old.acme.com", (now + timedelta(days=2)).isoformat())
    await client.post("/api/v1/events", json=renewed, headers=auth())
    await client.post("/api/v1/events", json={**renewed, "status": "resolved"}, headers=auth())


def test_expiry_values_and_schedule() -> None:
    assert reports.parse_expiry("2026-04-01T00:00:00Z") == datetime(2026, 4, 1, tzinfo=UTC)
    assert reports.parse_expiry("2026-04-01") == datetime(2026, 4, 1, tzinfo=UTC)
    assert reports.parse_expiry(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert reports.parse_expiry("soon") is None and reports.parse_expiry(True) is None
    config = make_config("sqlite+aiosqlite:///x.db", reports={"timezone": "Europe/Berlin"}).reports
    # Monday 07:00 in Berlin: 06:00 UTC in winter, 05:00 UTC in summer.
    assert reports.last_scheduled(config, MONDAY) == datetime(2026, 1, 5, 6, tzinfo=UTC)
    assert reports.next_scheduled(config, datetime(2026, 6, 1, 12, tzinfo=UTC)) == datetime(2026, 6, 8, 5, tzinfo=UTC)
    with pytest.raises(ValueError):
        make_config("sqlite+aiosqlite:///x.db", reports={"channels": ["nope"]})


async def test_the_report_lists_open_alerts_approvals_and_what_expires(
    app_factory: AppFactory, database_url: str
) -> None:
    clock = ManualClock(MONDAY)
    client, _ = await app_factory(report_config(database_url, []), run_dispatcher=False, clock=clock)
    await seed(client, MONDAY)
    resp = await client.get("/api/v1/reports/preview", headers=auth())
    assert resp.status == 200, await resp.text()
    document = await resp.json()
    report = document["report"]
    assert report["open_alerts"]["total"] == 5
    assert report["open_alerts"]["by_severity"] == {"critical": 1, "medium": 4}
    assert report["open_alerts"]["items"][0]["title"] == "disk full"
    expiring_items = report["expiring"]["items"]
    assert report["expiring"]["total"] == 2 and report["expiring"]["within_days"] == 14
    assert [(i["alert"]["title"], i["expired"]) for i in expiring_items] == [
        ("<b>old cert</b>", True),
        ("tls api.acme.com", False),
    ]
    assert expiring_items[1]["days_left"] == 3.0
    assert report["pending_approvals"]["available"] is True and report["pending_approvals"]["total"] == 0
    assert "Expiring within 14 days: 2" in document["text"] and "EXPIRED" in document["text"]
    # A tenant's key cannot read a report that covers every tenant.
    assert (await client.get("/api/v1/reports/preview", headers=auth(TENANT_KEY))).status == 403


async def test_each_scheduled_report_fires_once_across_replicas(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(datetime(2026, 1, 5, 5, 59, tzinfo=UTC))  # 06:59 in Berlin
    config = report_config(database_url, [])
    client, runtime = await app_factory(config, run_dispatcher=False, clock=clock)
    await seed(client, clock.now())
    replicas = [Database(database_url) for _ in range(3)]
    schedulers = [
        NoiseScheduler(db=db, clock=clock, config=config, public_url="http://ackbot.test", worker=f"r{n}")
        for n, db in enumerate(replicas)
    ]
    try:
        assert [(await s.tick()).reports for s in schedulers] == [[], [], []]
        clock.set(datetime(2026, 1, 5, 6, 0, 30, tzinfo=UTC))
        fired = await asyncio.gather(*[s.tick() for s in schedulers])
        assert sum(len(result.reports) for result in fired) == 1
        assert [(await s.tick()).reports for s in schedulers] == [[], [], []]
        # Every replica down for the whole catch-up window: that week's report is skipped, the next one is not.
        clock.set(datetime(2026, 1, 12, 19, 0, tzinfo=UTC))
        assert (await schedulers[0].tick()).reports == []
        clock.set(datetime(2026, 1, 19, 6, 1, tzinfo=UTC))
        assert len((await schedulers[1].tick()).reports) == 1
    finally:
        for db in replicas:
            await db.close()
    async with runtime.db.read() as session:
        runs = (await session.execute(select(ReportRunRow).order_by(ReportRunRow.scheduled_for))).scalars().all()
        reported = (await session.execute(select(DeliveryRow).where(DeliveryRow.purpose == "report"))).scalars().all()
    assert [run.scheduled_for for run in runs] == [
        datetime(2026, 1, 5, 6, tzinfo=UTC),
        datetime(2026, 1, 19, 6, tzinfo=UTC),
    ]
    assert runs[0].summary == {"open_alerts": 5, "pending_approvals": 0, "expiring": 2}
    assert len(reported) == 2 and {row.channel for row in reported} == {"console"}


async def test_the_report_goes_out_as_html_mail_json_and_cards(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(MONDAY)
    with SmtpSink() as smtp:
        async with HttpSink(Reply(200)) as sink:
            mail = {
                "name": "mail",
                "type": "email",
                "settings": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from": "ackbot@example.com",
                    "to": ["ops@example.com"],
                    "allow_private": True,
                },
            }
            hook = {
                "name": "hook",
                "type": "webhook",
                "settings": {"url": sink.url(), "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET", "allow_private": True},
            }
            client, runtime = await app_factory(
                report_config(database_url, [mail, hook]), run_dispatcher=False, clock=clock
            )
            await seed(client, MONDAY)
            resp = await client.post("/api/v1/reports/send", json={}, headers=auth())
            assert resp.status == 202, await resp.text()
            assert len((await resp.json())["deliveries"]) == 2
            bad = await client.post("/api/v1/reports/send", json={"channels": ["fax"]}, headers=auth())
            assert bad.status == 422 and (await bad.json())["error"]["fields"][0]["field"] == "channels"
            assert await runtime.dispatcher.run_once() == 2
            body = sink.requests[0].json()
            assert body["type"] == "report" and body["report"]["expiring"]["total"] == 2
            assert body["report"]["trigger"] == "manual" and "digest" not in body
            (received,) = smtp.messages
            html_part = received.message.get_body(("html",))
            assert html_part is not None
            html = html_part.get_content()
            assert html.count("<table") == 2 and "&lt;b&gt;old cert&lt;/b&gt;" in html and "<b>old" not in html
            assert "tls api.acme.com" in html and "Pending approvals: 0" in html

            async with runtime.db.read() as session:
                row = (await session.execute(select(DeliveryRow).where(DeliveryRow.channel == "hook"))).scalar_one()
            note = await runtime.dispatcher.build_notification(row)
            message = slack_cards.render(note)
            assert_valid_blocks(message)
            assert "2 expiring" in message["text"] and "⛔ expired" in str(message["blocks"])
            card = teams_cards.render(note)
            assert_valid_card(card)
            assert "Expiring within 14 days: 2" in str(card)


def test_report_send_and_preview_cli(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    path = tmp_path / "c.yml"
    path.write_text(
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path}/a.db'}}\n"
        "channels: [{name: console, type: console}]\n"
        "reports: {channels: [console], expiring_within_days: 7}\n"
    )
    assert main(["report", "send", "--config", str(path)]) == 0
    assert "console: report delivered" in capsys.readouterr().out
    assert main(["report", "send", "--channel", "nope", "--config", str(path)]) == 2
    assert "no channel named 'nope'" in capsys.readouterr().err
    assert main(["report", "preview", "--config", str(path)]) == 0
    assert "Expiring within 7 days: 0" in capsys.readouterr().out
