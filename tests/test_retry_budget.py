"""Retries bounded by a time budget per channel (retry_for), not by a count of tries: a receiver's outage delays
its deliveries rather than losing them; 429s and Retry-After are waited out and not counted; how long a delivery
has been failing is in its record and the metrics. Against a real receiver on loopback, with a manual clock."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.slack import SlackChannel
from bot.teams.channel import TeamsChannel
from core.channels.email import EmailChannel
from core.channels.jira import JiraChannel
from core.channels.pagerduty import PagerDutyChannel
from core.channels.retry import MAX_RETRY_AFTER, backoff
from core.channels.slack_webhook import SlackWebhookChannel
from core.channels.teams_workflows import TeamsWorkflowsChannel
from core.channels.webhook import WebhookChannel
from core.clock import ManualClock
from core.store.tables import DeliveryAttemptRow, DeliveryRow
from tests.conftest import AppFactory, auth
from tests.peers.http_sink import HttpSink, Reply
from tests.test_dispatch import EVENT, config_with, webhook

RATE_LIMITED = Reply(429, "slow down", headers={"Retry-After": "6"})


async def rows(runtime: Any) -> list[DeliveryRow]:
    async with runtime.db.read() as session:
        return list((await session.execute(select(DeliveryRow).order_by(DeliveryRow.id))).scalars())


async def history(runtime: Any) -> dict[str, list[DeliveryAttemptRow]]:
    async with runtime.db.read() as session:
        found = (await session.execute(select(DeliveryAttemptRow).order_by(DeliveryAttemptRow.id))).scalars()
        attempts = list(found)
    by_delivery: dict[str, list[DeliveryAttemptRow]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return by_delivery


async def failing_gauge(client: Any, runtime: Any, channel: str) -> float:
    await runtime.dispatcher.refresh_gauges()
    text = await (await client.get("/metrics")).text()
    (line,) = [
        line for line in text.splitlines() if line.startswith(f'ackbot_delivery_failing_seconds{{channel="{channel}"}}')
    ]
    return float(line.split()[-1])


async def test_every_delivery_outlasts_a_receiver_down_then_rate_limiting(
    app_factory: AppFactory, database_url: str
) -> None:
    # The receiver: 500 for 12 s, then 429 with Retry-After: 6 for 12 s, then well again.
    clock = ManualClock()
    async with HttpSink(Reply(200)) as sink:
        sink.always(Reply(500, "down"))
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url("/in"), rate_per_second=1000)]),
            run_dispatcher=False,
            clock=clock,
        )
        batch = [{**EVENT, "dedup_key": f"outage-{n}"} for n in range(30)]
        assert (await client.post("/api/v1/events", json=batch, headers=auth())).status == 202
        start = clock.now()
        phase = "down"
        while clock.now() - start < timedelta(hours=1):
            elapsed = clock.now() - start
            if phase == "down" and elapsed >= timedelta(seconds=12):
                phase = "rate limiting"
                sink.always(RATE_LIMITED)
            elif phase == "rate limiting" and elapsed >= timedelta(seconds=24):
                phase = "back"
                sink.always(Reply(200))
            await runtime.dispatcher.run_once()
            if elapsed == timedelta(seconds=20):
                # In the outage: every delivery's record says since when it has been failing, and so does the gauge.
                listing = await (await client.get("/api/v1/deliveries?status=failed", headers=auth())).json()
                assert listing["items"], listing
                assert {datetime.fromisoformat(d["failing_since"]) for d in listing["items"]} == {start}
                assert await failing_gauge(client, runtime, "hook") == 20.0
            if phase == "back" and all(row.status == "sent" for row in await rows(runtime)):
                break
            clock.advance(timedelta(seconds=1) if elapsed < timedelta(seconds=60) else timedelta(seconds=10))
        stored = await rows(runtime)
        assert [row.status for row in stored] == ["sent"] * 30
        assert all(row.failing_since is None for row in stored)
        delivered = {r.headers["X-Ackbot-Delivery-Id"] for r in sink.requests}
        assert len(delivered) == 30
        attempts = await history(runtime)
        for row in stored:
            tries = attempts[row.id]
            assert [a.outcome for a in tries][-1] == "sent" and [a.outcome for a in tries].count("sent") == 1
            assert "permanent" not in [a.outcome for a in tries]
            # Retry-After honoured: no try sooner than 6 s after a 429.
            for earlier, later in itertools.pairwise(tries):
                if earlier.status_code == 429:
                    assert later.started_at - earlier.finished_at >= timedelta(seconds=6)
            # 429s are not held against the delivery's tries.
            assert row.counted_failures == sum(1 for a in tries if a.status_code == 500)
        assert await failing_gauge(client, runtime, "hook") == 0.0
        text = await (await client.get("/metrics")).text()
        assert 'ackbot_deliveries_total{channel="hook",status="dead"}' not in text


async def test_a_delivery_is_retried_for_its_retry_for_then_dead_and_its_record_says_since_when(
    app_factory: AppFactory, database_url: str
) -> None:
    clock = ManualClock()
    async with HttpSink(Reply(503, "down")) as sink:
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url(), retry_for="1h")]), run_dispatcher=False, clock=clock
        )
        await client.post("/api/v1/events", json=EVENT, headers=auth())
        start = clock.now()
        assert await runtime.dispatcher.run_once() == 1
        (row,) = await rows(runtime)
        for minutes in range(10, 60, 10):
            clock.advance(timedelta(minutes=10))
            assert await runtime.dispatcher.run_once() == 1
            detail = await (await client.get(f"/api/v1/deliveries/{row.id}", headers=auth())).json()
            assert detail["status"] == "failed" and datetime.fromisoformat(detail["failing_since"]) == start
            # The last try falls at the end of the budget, never after it.
            assert datetime.fromisoformat(detail["next_attempt_at"]) <= start + timedelta(hours=1)
            assert await failing_gauge(client, runtime, "hook") == minutes * 60
        # Six tries in fifty minutes, more than the five that used to kill it, and it is still being retried.
        assert len(sink.requests) == 6
        clock.advance(timedelta(minutes=10))
        assert await runtime.dispatcher.run_once() == 1
        detail = await (await client.get(f"/api/v1/deliveries/{row.id}", headers=auth())).json()
        assert detail["status"] == "dead" and datetime.fromisoformat(detail["failing_since"]) == start
        assert [a["outcome"] for a in detail["history"]] == ["retry"] * 6 + ["permanent"]
        assert await failing_gauge(client, runtime, "hook") == 0.0
        # Retried by hand, it has a fresh budget.
        assert (await client.post(f"/api/v1/deliveries/{row.id}/retry", headers=auth())).status == 202
        detail = await (await client.get(f"/api/v1/deliveries/{row.id}", headers=auth())).json()
        assert detail["status"] == "pending" and detail["failing_since"] is None


async def test_429s_and_retry_after_are_not_counted_against_max_attempts(
    app_factory: AppFactory, database_url: str
) -> None:
    clock = ManualClock()
    async with HttpSink(Reply(200)) as sink:
        sink.enqueue(
            Reply(429, "slow down", headers={"Retry-After": "1"}),
            Reply(429, "slow down"),
            Reply(503, "restarting", headers={"Retry-After": "2"}),
            Reply(429, "slow down", headers={"Retry-After": "1"}),
            Reply(500, "oops"),
            Reply(500, "oops"),
        )
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url(), max_attempts=3)]), run_dispatcher=False, clock=clock
        )
        await client.post("/api/v1/events", json=EVENT, headers=auth())
        for _ in range(10):
            await runtime.dispatcher.run_once()
            clock.advance(timedelta(minutes=1))
        (row,) = await rows(runtime)
        # Six failures, two of them counted: the third counted one never came.
        assert row.status == "sent" and row.attempts == 7
        assert 'ackbot_rate_limited_total{channel="hook"} 4.0' in (await (await client.get("/metrics")).text())

        # Three counted failures use up max_attempts: dead.
        sink.enqueue(*[Reply(500, "oops")] * 3)
        await client.post("/api/v1/events", json={**EVENT, "dedup_key": "second"}, headers=auth())
        for _ in range(10):
            await runtime.dispatcher.run_once()
            clock.advance(timedelta(minutes=1))
        dead = [r for r in await rows(runtime) if r.id != row.id]
        assert [(r.status, r.attempts, r.counted_failures) for r in dead] == [("dead", 3, 3)]


async def test_a_retry_after_past_the_budget_is_still_honoured(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock()
    async with HttpSink(Reply(200)) as sink:
        sink.enqueue(Reply(503, "down"), Reply(429, "later", headers={"Retry-After": "120"}))
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url(), retry_for="1m")]), run_dispatcher=False, clock=clock
        )
        await client.post("/api/v1/events", json=EVENT, headers=auth())
        assert await runtime.dispatcher.run_once() == 1
        clock.advance(timedelta(seconds=5))
        assert await runtime.dispatcher.run_once() == 1
        (row,) = await rows(runtime)
        # The receiver said when it is back: that try is made, though it falls after the one-minute budget.
        assert row.status == "failed" and row.next_attempt_at >= clock.now() + timedelta(seconds=120)
        clock.advance(timedelta(seconds=120))
        assert await runtime.dispatcher.run_once() == 1
        assert [r.status for r in await rows(runtime)] == ["sent"]


@pytest.mark.parametrize(("status", "outcome"), [(400, "dead"), (404, "dead"), (422, "dead"), (408, "failed")])
async def test_permanent_errors_are_dead_at_once_whatever_the_budget(
    app_factory: AppFactory, database_url: str, status: int, outcome: str
) -> None:
    clock = ManualClock()
    async with HttpSink(Reply(status, "no")) as sink:
        client, runtime = await app_factory(
            config_with(database_url, [webhook("hook", sink.url(), retry_for="6h")]), run_dispatcher=False, clock=clock
        )
        await client.post("/api/v1/events", json=EVENT, headers=auth())
        assert await runtime.dispatcher.run_once() == 1
        (row,) = await rows(runtime)
        assert row.status == outcome and row.failing_since == clock.now()


def test_machine_receivers_are_retried_for_hours_and_chat_and_mail_briefly() -> None:
    for machine in (WebhookChannel, PagerDutyChannel, JiraChannel):
        assert machine.RETRY_FOR >= timedelta(hours=6) and machine.MAX_ATTEMPTS is None, machine
        assert machine.BACKOFF_MAX <= 300, machine
    for person in (SlackChannel, SlackWebhookChannel, TeamsChannel, TeamsWorkflowsChannel, EmailChannel):
        assert person.RETRY_FOR <= timedelta(hours=1) and person.MAX_ATTEMPTS is not None, person


def test_backoff_is_capped_jittered_and_never_sooner_than_asked() -> None:
    delays = [backoff(attempt=n, base=2.0, cap=300.0, retry_after=None) for n in range(1, 10_000)]
    assert max(delays) <= 300.0 and min(delays) >= 0.0 and len(set(delays)) > 100
    assert backoff(attempt=1, base=1.0, cap=1.0, retry_after=6.0) == 6.0
    assert backoff(attempt=1, base=1.0, cap=1.0, retry_after=1e9) == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("value", "says"), [("'forever'", "a duration such as"), ("30d", "at most 7d"), ("-1", "cannot be negative")]
)
def test_a_bad_retry_for_is_an_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, says: str
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path}/a.db'}}\n"
        "channels:\n"
        "  - name: hook\n"
        "    type: webhook\n"
        f"    settings: {{url: 'https://hooks.example/in', secret: 'env:S', retry_for: {value}}}\n"
    )
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "channels[0].settings.retry_for" in err and says in err, err
