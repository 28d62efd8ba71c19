"""The PagerDuty Events API v2 channel against a local fake of events.pagerduty.com."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.channels.base import ChannelContext
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.pagerduty import PagerDutyChannel, PagerDutySettings
from core.models.approvals import ApprovalState
from core.models.common import Severity
from core.models.events import AlertStatus
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.notes import make_alert, make_approval_note, make_note

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
ACCEPTED = Reply.json({"status": "success", "message": "Event processed", "dedup_key": "fp-0123456789abcdef"}, 202)


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_ROUTING_KEY", ROUTING_KEY)


def pagerduty(base_url: str, **settings: object) -> PagerDutyChannel:
    data = {"routing_key": "env:PD_ROUTING_KEY", "base_url": base_url, "allow_private": True, "timeout": 2, **settings}
    return PagerDutyChannel("pd", PagerDutySettings.model_validate(data), ChannelContext())


async def test_trigger_event_shape() -> None:
    async with HttpSink(ACCEPTED) as sink:
        channel = pagerduty(sink.base_url)
        try:
            result = await channel.send(make_note())
        finally:
            await channel.close()
    [got] = sink.requests
    assert (got.method, got.path) == ("POST", "/v2/enqueue")
    event = got.json()
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "fp-0123456789abcdef"
    payload = event["payload"]
    assert payload["summary"] == "CVE-2024-0001 in <payments> & co"
    assert payload["severity"] == "critical"
    assert payload["source"] == "acme/payments"
    assert payload["group"] == "prod"
    assert payload["class"] == "vuln.critical"
    assert payload["timestamp"] == "2024-06-01T12:05:00+00:00"
    details = payload["custom_details"]
    assert details["tenant"] == "acme" and details["labels"] == {"team": "pay"}
    assert details["alert_id"] == "al_1" and details["suppressed_count"] == 2
    assert event["client"] == "ackbot" and event["client_url"] == "https://ackbot.example.com"
    assert {"href": "https://example.org/advisory?a=1&b=2", "text": "Advisory"} in event["links"]
    assert {"href": "https://ackbot.example.com/ack/tok-ack-123", "text": "Acknowledge in ackbot"} in event["links"]
    assert result.message_ref == {"dedup_key": "fp-0123456789abcdef"}
    assert result.status_code == 202


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.critical, "critical"),
        (Severity.high, "error"),
        (Severity.medium, "warning"),
        (Severity.low, "info"),
        (Severity.info, "info"),
    ],
)
async def test_severity_mapping(severity: Severity, expected: str) -> None:
    channel = pagerduty("http://127.0.0.1:9")
    event = channel.build_event(make_note(alert=make_alert(severity=severity)), ROUTING_KEY)
    assert event["payload"]["severity"] == expected


@pytest.mark.parametrize(
    ("status", "action"),
    [(AlertStatus.open, "trigger"), (AlertStatus.acknowledged, "acknowledge"), (AlertStatus.resolved, "resolve")],
)
async def test_alert_status_decides_the_event_action(status: AlertStatus, action: str) -> None:
    async with HttpSink(ACCEPTED) as sink:
        channel = pagerduty(sink.base_url)
        try:
            await channel.update({"dedup_key": "fp-0123456789abcdef"}, make_note(alert=make_alert(status=status)))
        finally:
            await channel.close()
    event = sink.requests[0].json()
    assert event["event_action"] == action
    assert event["dedup_key"] == "fp-0123456789abcdef"
    if action != "trigger":
        assert set(event) == {"routing_key", "event_action", "dedup_key"}


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (ApprovalState.pending, "trigger"),
        (ApprovalState.acknowledged, "acknowledge"),
        (ApprovalState.denied, "resolve"),
        (ApprovalState.expired, "resolve"),
    ],
)
def test_bare_approvals_map_too(state: ApprovalState, action: str) -> None:
    channel = pagerduty("http://127.0.0.1:9")
    note = make_approval_note(state)
    assert channel.event_action(note) == action
    assert channel.dedup_key(note) == "approval:ap_1"


@pytest.mark.parametrize(
    ("status", "state", "action"),
    [
        (AlertStatus.open, ApprovalState.acknowledged, "acknowledge"),
        (AlertStatus.open, ApprovalState.denied, "trigger"),
        (AlertStatus.resolved, ApprovalState.pending, "resolve"),
    ],
)
def test_with_an_alert_the_alert_leads_and_an_acknowledged_approval_acknowledges(
    status: AlertStatus, state: ApprovalState, action: str
) -> None:
    channel = pagerduty("http://127.0.0.1:9")
    approval = make_approval_note(state).approval
    note = make_note(alert=make_alert(status=status), approval=approval)
    assert channel.event_action(note) == action
    assert channel.dedup_key(note) == "fp-0123456789abcdef"


def test_long_summary_and_dedup_key_are_clipped_to_pagerdutys_limits() -> None:
    channel = pagerduty("http://127.0.0.1:9")
    note = make_note(alert=make_alert(title="x" * 2000, fingerprint="f" * 300))
    event = channel.build_event(note, ROUTING_KEY)
    assert len(event["dedup_key"]) <= 255
    assert event["dedup_key"] == channel.dedup_key(note)  # stable: every retry and update finds the same alert
    assert len(event["payload"]["summary"]) == 1024


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (Reply.json({"status": "throttle", "message": "Requests for this service are arriving too quickly"}, 429,
                    {"Retry-After": "30"}), TransientChannelError, 30.0),
        (Reply(500), TransientChannelError, None),
        (Reply(502), TransientChannelError, None),
        (Reply.hang(5), TransientChannelError, None),
    ],
)  # fmt: skip
async def test_transient_answers(reply: Reply, error: type[Exception], retry_after: float | None) -> None:
    async with HttpSink(reply) as sink:
        channel = pagerduty(sink.base_url, timeout=0.3)
        try:
            with pytest.raises(TransientChannelError) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert caught.value.retry_after == retry_after
    assert ROUTING_KEY not in str(caught.value)


async def test_400_is_permanent_quotes_pagerduty_and_hides_the_routing_key() -> None:
    answer = {"status": "invalid event", "message": "Event object is invalid", "errors": [f"bad key {ROUTING_KEY}"]}
    async with HttpSink(Reply.json(answer, 400)) as sink:
        channel = pagerduty(sink.base_url)
        try:
            with pytest.raises(PermanentChannelError) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert caught.value.status_code == 400
    assert "Event object is invalid" in str(caught.value)
    assert ROUTING_KEY not in str(caught.value)


def test_default_base_url_and_limits() -> None:
    settings = PagerDutySettings.model_validate({"routing_key": "env:PD_ROUTING_KEY"})
    assert settings.base_url == "https://events.pagerduty.com"
    # A page must outlast PagerDuty's own outage: six hours of tries, no count of them, 2 s doubling to 2 minutes.
    limits = (PagerDutyChannel.RETRY_FOR, PagerDutyChannel.MAX_ATTEMPTS)
    assert limits == (timedelta(hours=6), None)
    assert (PagerDutyChannel.BACKOFF_BASE, PagerDutyChannel.BACKOFF_MAX) == (2.0, 120.0)
