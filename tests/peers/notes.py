"""Notifications to send through channels in tests: an alert, an approval, a callback, each fully populated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.channels.base import Button, Notification
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.common import Severity
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, AlertStatus, Event, Link, Scope

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PUBLIC_URL = "https://ackbot.example.com"


def make_alert(**overrides: Any) -> Alert:
    """An open critical alert with scope, labels and a link."""
    fields: dict[str, Any] = {
        "id": "al_1",
        "tenant": "acme",
        "fingerprint": "fp-0123456789abcdef",
        "kind": "vuln.critical",
        "status": AlertStatus.open,
        "severity": Severity.critical,
        "title": "CVE-2024-0001 in <payments> & co",
        "summary": "A critical vulnerability was found.\nUpgrade libfoo to 1.2.3.",
        "scope": Scope(namespace="prod", repo="acme/payments", digest="sha256:abc", labels={"team": "pay"}),
        "links": [Link(title="Advisory", url="https://example.org/advisory?a=1&b=2")],
        "first_seen": NOW,
        "last_seen": NOW + timedelta(minutes=5),
        "event_count": 3,
        "last_event_id": "ev_1",
    }
    fields.update(overrides)
    return Alert(**fields)


def make_event(**overrides: Any) -> Event:
    """A firing event."""
    fields: dict[str, Any] = {
        "id": "ev_1",
        "kind": "vuln.critical",
        "tenant": "acme",
        "ts": NOW,
        "received_at": NOW,
        "severity": Severity.critical,
        "title": "CVE-2024-0001 in <payments> & co",
        "scope": Scope(namespace="prod", repo="acme/payments"),
        "dedup_key": "payments-cve",
        "alert_id": "al_1",
    }
    fields.update(overrides)
    return Event(**fields)


def make_approval(**overrides: Any) -> Approval:
    """A pending approval on the alert."""
    fields: dict[str, Any] = {
        "id": "ap_1",
        "tenant": "acme",
        "title": "Deploy payments 1.2.3 to prod?",
        "summary": "Release train 42",
        "requester": "ci",
        "approvers": ["oncall"],
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "alert_id": "al_1",
        "callback_url": None,
    }
    fields.update(overrides)
    return Approval(**fields)


def make_buttons(public_url: str = PUBLIC_URL) -> list[Button]:
    """Acknowledge / Deny buttons pointing at the web ack page."""
    return [
        Button(choice="acknowledge", label="Acknowledge", token="tok-ack-123", url=f"{public_url}/ack/tok-ack-123"),
        Button(choice="deny", label="Deny", token="tok-deny-456", url=f"{public_url}/ack/tok-deny-456"),
    ]


def make_note(**overrides: Any) -> Notification:
    """A notify delivery about an open critical alert, with buttons."""
    fields: dict[str, Any] = {
        "delivery_id": "dl_1",
        "idempotency_key": "idem-dl_1",
        "tenant": "acme",
        "purpose": DeliveryPurpose.notify,
        "channel": "test",
        "alert": make_alert(),
        "event": make_event(),
        "buttons": make_buttons(),
        "suppressed_count": 2,
        "public_url": PUBLIC_URL,
        "created_at": NOW,
    }
    fields.update(overrides)
    return Notification(**fields)


def make_approval_note(state: ApprovalState = ApprovalState.pending, **overrides: Any) -> Notification:
    """A notification about an approval (decided by alice unless pending)."""
    decided: dict[str, Any] = {}
    if state is not ApprovalState.pending:
        decided = {"decided_by": "alice", "decided_at": NOW, "decided_choice": Choice.acknowledge}
    fields: dict[str, Any] = {
        "delivery_id": "dl_2",
        "idempotency_key": "idem-dl_2",
        "tenant": "acme",
        "purpose": DeliveryPurpose.notify if state is ApprovalState.pending else DeliveryPurpose.update,
        "channel": "test",
        "approval": make_approval(state=state, **decided),
        "buttons": make_buttons() if state is ApprovalState.pending else [],
        "public_url": PUBLIC_URL,
        "created_at": NOW,
    }
    fields.update(overrides)
    return Notification(**fields)
