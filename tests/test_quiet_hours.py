"""Quiet hours: local windows across midnight and daylight-saving changes, layers, and what is held back where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from core.clock import ManualClock
from core.config import AckbotConfig
from core.models.common import Severity
from core.models.people import Person
from core.models.rules import Action, QuietHours, Rule
from core.quiet_hours import Layer, layers_for, occurrence, quiet_hold
from core.store.tables import DeliveryRow, DigestWindowRow
from tests.conftest import AppFactory, auth, make_config

BERLIN_NIGHT = {"window": "22:00-06:00", "timezone": "Europe/Berlin"}
EVENT = {"kind": "disk.full", "tenant": "acme", "severity": "high", "title": "disk full on db-1"}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def night(**overrides: Any) -> QuietHours:
    return QuietHours.model_validate({**BERLIN_NIGHT, **overrides})


# ---------------------------------------------------------------- the windows themselves


def test_window_across_midnight_in_berlin_winter() -> None:
    spec = night()
    # CET is UTC+1: 22:00-06:00 local is 21:00-05:00 UTC.
    assert occurrence(spec, utc(2026, 1, 5, 20, 59)) is None
    assert occurrence(spec, utc(2026, 1, 5, 21, 0)) == (utc(2026, 1, 5, 21), utc(2026, 1, 6, 5))
    # After midnight the window that started the evening before is still running.
    assert occurrence(spec, utc(2026, 1, 6, 4, 59)) == (utc(2026, 1, 5, 21), utc(2026, 1, 6, 5))
    assert occurrence(spec, utc(2026, 1, 6, 5, 0)) is None


def test_spring_forward_night_is_an_hour_shorter_in_utc() -> None:
    # 2026-03-29 02:00 CET becomes 03:00 CEST: 22:00 CET (21:00Z) to 06:00 CEST (04:00Z) is 7 hours.
    start, end = occurrence(night(), utc(2026, 3, 28, 23, 30)) or (None, None)
    assert (start, end) == (utc(2026, 3, 28, 21), utc(2026, 3, 29, 4))
    assert occurrence(night(), utc(2026, 3, 29, 3, 59)) is not None
    assert occurrence(night(), utc(2026, 3, 29, 4, 0)) is None
    # The next evening starts at 22:00 CEST, 20:00Z.
    assert occurrence(night(), utc(2026, 3, 29, 19, 59)) is None
    assert occurrence(night(), utc(2026, 3, 29, 20, 0)) == (utc(2026, 3, 29, 20), utc(2026, 3, 30, 4))


def test_fall_back_night_is_an_hour_longer_in_utc() -> None:
    # 2026-10-25 03:00 CEST becomes 02:00 CET: 22:00 CEST (20:00Z) to 06:00 CET (05:00Z) is 9 hours.
    assert occurrence(night(), utc(2026, 10, 24, 20, 0)) == (utc(2026, 10, 24, 20), utc(2026, 10, 25, 5))
    assert occurrence(night(), utc(2026, 10, 25, 4, 59)) is not None
    assert occurrence(night(), utc(2026, 10, 25, 5, 0)) is None


def test_a_window_inside_the_skipped_hour_still_means_local_time() -> None:
    # 02:30 does not exist on 2026-03-29 in Berlin; it is read with the offset before the change (as 03:30 CEST).
    spec = night(window="02:30-05:00")
    assert occurrence(spec, utc(2026, 3, 29, 1, 29)) is None
    assert occurrence(spec, utc(2026, 3, 29, 1, 30)) == (utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 3, 0))


def test_days_name_the_day_a_window_starts() -> None:
    friday_night = night(days=["fri"])
    # 2026-01-09 is a Friday: its window runs into Saturday morning; Saturday evening is not quiet.
    assert occurrence(friday_night, utc(2026, 1, 9, 22)) is not None
    assert occurrence(friday_night, utc(2026, 1, 10, 3)) is not None
    assert occurrence(friday_night, utc(2026, 1, 10, 22)) is None
    weekend = QuietHours(window="00:00-24:00", timezone="Europe/Berlin", days=["sat", "sun"])
    assert occurrence(weekend, utc(2026, 1, 10, 12)) == (utc(2026, 1, 9, 23), utc(2026, 1, 10, 23))
    assert occurrence(weekend, utc(2026, 1, 12, 12)) is None


def test_min_severity_gets_through_and_chained_windows_are_followed() -> None:
    layers = [Layer("global", (night(min_severity="high"),))]
    at = utc(2026, 1, 5, 23)
    assert quiet_hold(now=at, severity=Severity.high, layers=layers) is None
    assert quiet_hold(now=at, severity=Severity.critical, layers=layers) is None
    held = quiet_hold(now=at, severity=Severity.medium, layers=layers)
    assert held is not None and held.until == utc(2026, 1, 6, 5) and held.source == "global"
    # A morning window of the rule that starts where the night ends extends the hold.
    chained = [*layers, Layer("rule r", (QuietHours(window="06:00-08:00", timezone="Europe/Berlin"),))]
    held = quiet_hold(now=at, severity=Severity.medium, layers=chained)
    assert held is not None and held.until == utc(2026, 1, 6, 7) and held.source == "rule r"


def test_layers_global_rule_and_targeted_person() -> None:
    alice = Person(name="alice", quiet_hours=BERLIN_NIGHT)  # one window may be written without a list
    rule = Rule(name="r", quiet_hours=[{"window": "12:00-13:00"}])
    action = Action(channel="slack", target="person:alice")
    layers = layers_for(global_windows=[night()], rule=rule, action=action, people={"alice": alice})
    assert [layer.source for layer in layers] == ["global", "rule r", "person alice"]
    untargeted = layers_for(global_windows=[], rule=rule, action=Action(channel="slack"), people={"alice": alice})
    assert [layer.source for layer in untargeted] == ["rule r"]


def test_bad_quiet_hours_name_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        AckbotConfig.model_validate(
            {"quiet_hours": [{"window": "22:00-6", "timezone": "Mars/Olympus", "days": ["someday"]}]}
        )
    fields = {".".join(str(p) for p in e["loc"][:3]) for e in caught.value.errors()}
    assert {"quiet_hours.0.window", "quiet_hours.0.timezone"} <= fields
    assert any(f.startswith("quiet_hours.0.days") for f in fields)
    with pytest.raises(ValidationError):
        QuietHours(window="22:00-22:00")


# ---------------------------------------------------------------- what ingest does with them


def config(database_url: str, url: str | None = None, **kw: Any) -> AckbotConfig:
    channels = [{"name": "console", "type": "console"}]
    return make_config(database_url, channels=channels, quiet_hours=[BERLIN_NIGHT], **kw)


async def deliveries(runtime: Any) -> list[DeliveryRow]:
    async with runtime.db.read() as session:
        return list((await session.execute(select(DeliveryRow).order_by(DeliveryRow.created_at))).scalars())


async def test_held_until_the_window_ends_and_never_dropped(app_factory: AppFactory, database_url: str) -> None:
    # 23:30 on the spring-forward night in Berlin.
    clock = ManualClock(utc(2026, 3, 28, 22, 30))
    client, runtime = await app_factory(config(database_url), run_dispatcher=False, clock=clock)
    high = await (await client.post("/api/v1/events", json=EVENT, headers=auth())).json()
    critical = {**EVENT, "severity": "critical", "title": "db-1 down"}
    assert (await (await client.post("/api/v1/events", json=critical, headers=auth())).json())["deliveries"] == 1
    assert high["deliveries"] == 1
    rows = {row.alert_id: row for row in await deliveries(runtime)}
    assert rows[high["alert_id"]].next_attempt_at == utc(2026, 3, 29, 4)  # 06:00 CEST
    assert rows[high["alert_id"]].extra == {"held_until": "2026-03-29T04:00:00+00:00"}
    # Only the critical one goes out in the night.
    assert await runtime.dispatcher.run_once() == 1
    # The resolve of the held alert waits too, and goes out just after the notification it updates.
    clock.set(utc(2026, 3, 29, 1))
    await client.post("/api/v1/events", json={**EVENT, "status": "resolved"}, headers=auth())
    update = [r for r in await deliveries(runtime) if r.purpose == "update"]
    assert [r.next_attempt_at for r in update] == [utc(2026, 3, 29, 4, 0, 1)]
    clock.set(utc(2026, 3, 29, 3, 59))
    assert await runtime.dispatcher.run_once() == 0
    clock.set(utc(2026, 3, 29, 4, 0, 1))
    assert await runtime.dispatcher.run_once() == 2
    assert {r.status for r in await deliveries(runtime)} == {"sent"}


async def test_release_digest_sends_one_digest_when_the_night_ends(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(utc(2026, 10, 24, 21, 0))  # 23:00 CEST, the night the clocks go back
    rules = [{"name": "ops", "quiet_hours": {**BERLIN_NIGHT, "release": "digest"}, "actions": [{"channel": "console"}]}]
    client, runtime = await app_factory(make_config(database_url, rules=rules), run_dispatcher=False, clock=clock)
    for i in range(3):
        event = {**EVENT, "dedup_key": f"disk-{i}", "severity": ["low", "medium", "high"][i]}
        assert (await (await client.post("/api/v1/events", json=event, headers=auth())).json())["deliveries"] == 0
        clock.advance(timedelta(hours=2))
    assert await deliveries(runtime) == []
    async with runtime.db.read() as session:
        (window,) = (await session.execute(select(DigestWindowRow))).scalars()
    assert window.kind == "quiet" and window.window_end == utc(2026, 10, 25, 5)  # 06:00 CET
    assert runtime.noise is not None
    clock.set(utc(2026, 10, 25, 4, 59))
    assert (await runtime.noise.tick()).digests == []
    clock.set(utc(2026, 10, 25, 5, 0))
    (delivery_id,) = (await runtime.noise.tick()).digests
    (row,) = await deliveries(runtime)
    assert row.id == delivery_id and row.purpose == "digest"
    assert row.extra is not None and row.extra["digest"]["total"] == 3
    assert row.extra["digest"]["groups"] == {"severity: low": 1, "severity: medium": 1, "severity: high": 1}


async def test_person_quiet_hours_hold_what_targets_them(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(utc(2026, 1, 5, 23))  # midnight in Berlin
    people = [
        {"name": "alice", "quiet_hours": [BERLIN_NIGHT]},
        {"name": "bob", "identities": {"email": "bob@example.com"}},
    ]
    rules = [
        {
            "name": "page",
            "actions": [
                {"channel": "console", "target": "person:alice"},
                {"channel": "console", "target": "person:bob"},
            ],
        }
    ]
    client, runtime = await app_factory(
        make_config(database_url, people=people, rules=rules), run_dispatcher=False, clock=clock
    )
    assert (await (await client.post("/api/v1/events", json=EVENT, headers=auth())).json())["deliveries"] == 2
    by_target = {row.target: row.next_attempt_at for row in await deliveries(runtime)}
    assert by_target == {"person:alice": utc(2026, 1, 6, 5), "person:bob": clock.now()}


async def test_approval_requests_are_never_held(app_factory: AppFactory, database_url: str) -> None:
    clock = ManualClock(utc(2026, 1, 5, 23))  # midnight in Berlin, inside the global quiet hours
    rules = [
        {
            "name": "deploys",
            "actions": [
                {"channel": "console", "approval": {"approvers": ["alice"]}},
                {"channel": "console"},
            ],
        }
    ]
    client, runtime = await app_factory(
        config(database_url, people=[{"name": "alice"}], rules=rules), run_dispatcher=False, clock=clock
    )
    assert (await (await client.post("/api/v1/events", json=EVENT, headers=auth())).json())["deliveries"] == 2
    due = sorted((row.approval_id is not None, row.next_attempt_at) for row in await deliveries(runtime))
    # Someone is waiting on the approval: it goes out now; the plain notification waits for 06:00 in Berlin.
    assert due == [(False, utc(2026, 1, 6, 5)), (True, clock.now())]
