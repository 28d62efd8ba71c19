"""Representative notifications with fixed timestamps: the golden-file tests and card previews share them.

Unlike the renderers, this module builds Notification objects, so it imports core.channels.base at run time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.channels.base import Button, Notification
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.common import Severity
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, AlertStatus, Event, EventStatus, Link, Scope

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PUBLIC_URL = "https://ackbot.example.com"


def buttons(subject: str) -> list[Button]:
    """Acknowledge / Deny / Escalate buttons with recognisable fake tokens."""
    out = []
    for choice in Choice:
        token = f"v1.{subject}.{choice.value}.c2lnbmF0dXJl"
        out.append(Button(choice=choice.value, label="", token=token, url=f"{PUBLIC_URL}/ack/{token}"))
    return out


def alert(**overrides: Any) -> Alert:
    """A critical, firing alert with scope, labels and links; keyword arguments replace fields."""
    fields: dict[str, Any] = {
        "id": "al_01HXAMPLE",
        "tenant": "acme",
        "fingerprint": "fp-payments-latency",
        "kind": "alertmanager/HighLatency",
        "status": AlertStatus.open,
        "severity": Severity.critical,
        "title": "payments-api p99 latency above 2s",
        "summary": "p99 latency is 2.4s (threshold 2s) for 10 minutes.\nCheckout requests are timing out.",
        "scope": Scope(
            namespace="payments",
            repo="github.com/acme/payments-api",
            digest="sha256:4f2a9c1e0b7d3a5f",
            labels={"env": "prod", "team": "payments", "service_name": "payments_api"},
        ),
        "links": [
            Link(title="Runbook", url="https://runbooks.example.com/payments/latency"),
            Link(title="Dashboard", url="https://grafana.example.com/d/payments?var-env=prod&from=now-1h"),
        ],
        "first_seen": T0 - timedelta(minutes=10),
        "last_seen": T0,
        "event_count": 5,
    }
    fields.update(overrides)
    return Alert(**fields)


def approval(**overrides: Any) -> Approval:
    """A pending deploy approval that expires an hour after T0; keyword arguments replace fields."""
    fields: dict[str, Any] = {
        "id": "ap_01HXAMPLE",
        "tenant": "acme",
        "title": "Deploy payments-api 4f2a9c1 to production",
        "summary": "12 commits since the last release, including a database migration.",
        "requester": "ci-bot",
        "approvers": ["alice", "ops-leads"],
        "context": {
            "pipeline": "deploy-prod",
            "commit": "4f2a9c1",
            "changes": 12,
            "regions": ["eu-west-1", "us-east-1"],
        },
        "rule": "prod-deploys",
        "created_at": T0,
        "expires_at": T0 + timedelta(hours=1),
    }
    fields.update(overrides)
    return Approval(**fields)


def note(purpose: DeliveryPurpose = DeliveryPurpose.notify, **fields: Any) -> Notification:
    """A Notification with the routine fields filled in; created 15 minutes after T0."""
    base: dict[str, Any] = {
        "delivery_id": "dl_01HXAMPLE",
        "idempotency_key": "idem-1",
        "tenant": "acme",
        "purpose": purpose,
        "channel": "ops-slack",
        "public_url": PUBLIC_URL,
        "created_at": T0 + timedelta(minutes=15),
    }
    base.update(fields)
    return Notification(**base)


def notifications() -> dict[str, Notification]:
    """Every notification view worth a golden file, by name."""
    update = DeliveryPurpose.update
    decided_at = T0 + timedelta(minutes=20)
    event = Event(
        id="ev_01HXAMPLE",
        kind="ci/build-failed",
        tenant="acme",
        ts=T0,
        received_at=T0,
        severity=Severity.medium,
        title="Nightly build failed on main",
        summary="3 tests failed in test_checkout.py",
        scope=Scope(repo="github.com/acme/shop"),
        links=[Link(title="Build log", url="https://ci.example.com/builds/981")],
    )
    return {
        "alert_firing": note(alert=alert(), buttons=buttons("al"), suppressed_count=3),
        "alert_low_no_buttons": note(
            alert=alert(severity=Severity.low, title="Disk 70% full on db-2", links=[], scope=Scope(namespace="db"))
        ),
        "event_only": note(event=event),
        "event_resolved_update": note(update, event=event.model_copy(update={"status": EventStatus.resolved})),
        "alert_acknowledged": note(
            update,
            alert=alert(status=AlertStatus.acknowledged, acknowledged_by="alice", acknowledged_at=decided_at),
        ),
        "alert_resolved": note(update, alert=alert(status=AlertStatus.resolved, resolved_at=decided_at)),
        "approval_pending": note(approval=approval(), buttons=buttons("ap")),
        "approval_with_alert": note(
            approval=approval(alert_id="al_01HXAMPLE", title="Restart payments-api pods?", context={}),
            alert=alert(severity=Severity.high),
            buttons=buttons("ap"),
        ),
        "approval_escalated": note(
            update,
            approval=approval(state=ApprovalState.escalated, decided_by="alice", escalation_level=1),
            buttons=buttons("ap"),
        ),
        "approval_acknowledged": note(
            update,
            approval=approval(
                state=ApprovalState.acknowledged,
                decided_by="alice",
                decided_at=decided_at,
                decided_choice=Choice.acknowledge,
            ),
        ),
        "approval_denied": note(
            update,
            approval=approval(
                state=ApprovalState.denied, decided_by="bob", decided_at=decided_at, decided_choice=Choice.deny
            ),
        ),
        "approval_expired": note(update, approval=approval(state=ApprovalState.expired)),
        "approval_cancelled": note(
            update, approval=approval(state=ApprovalState.cancelled, decided_by="ci-bot", decided_at=decided_at)
        ),
        "test_notice": note(
            DeliveryPurpose.test,
            extra={"title": "ackbot test message", "summary": "If you can read this, the channel works."},
        ),
    }


def alert_list() -> list[Alert]:
    """A short mixed list of alerts for list views."""
    return [
        alert(),
        alert(
            id="al_02HXAMPLE",
            severity=Severity.medium,
            status=AlertStatus.acknowledged,
            title="Queue depth growing on orders-worker",
            scope=Scope(namespace="orders"),
            last_seen=T0 - timedelta(minutes=3),
        ),
        alert(
            id="al_03HXAMPLE",
            severity=Severity.info,
            status=AlertStatus.resolved,
            title="Certificate renewed for shop.example.com",
            scope=Scope(),
            last_seen=T0 - timedelta(hours=2),
        ),
    ]


def approval_list() -> list[Approval]:
    """Approvals in a few states for list views."""
    return [
        approval(),
        approval(
            id="ap_02HXAMPLE", title="Rotate the Stripe API key", requester="alice", state=ApprovalState.escalated
        ),
        approval(
            id="ap_03HXAMPLE",
            title="Scale down staging",
            requester=None,
            state=ApprovalState.denied,
            decided_by="bob",
            decided_at=T0,
        ),
    ]


def digest_args() -> dict[str, Any]:
    """Keyword arguments for render_digest."""
    return {
        "title": "Hourly digest: payments",
        "groups": {"payments": 7, "orders": 2, "db": 2},
        "items": alert_list(),
        "total": 11,
        "link": f"{PUBLIC_URL}/alerts?digest=payments",
    }
