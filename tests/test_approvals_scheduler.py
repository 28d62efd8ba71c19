"""Escalation, expiry and resume: due times in the database, fired exactly once across replicas and restarts."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

from sqlalchemy import select

from core.approvals import DecisionReason
from core.channels import signing
from core.models.approvals import ApprovalState
from core.models.deliveries import DeliveryPurpose, DeliveryStatus
from core.store.tables import AlertRow, AuditRow, DeliveryRow, SpentNonceRow
from tests import test_approvals
from tests.conftest import auth
from tests.peers.http_sink import HttpSink, Reply
from tests.test_approvals import ALICE, BOB, ERIN, Harness, HarnessFactory

# The stand-in channels and the ManualClock harness, shared with test_approvals.
harness = test_approvals.harness

ESCALATION = [
    {"after": "10m", "targets": ["person:carol"], "approvers": ["leads"]},
    {"after": "20m", "targets": ["console"], "approvers": ["dave"]},
]


async def _deliveries(h: Harness, approval_id: str) -> list[DeliveryRow]:
    async with h.runtime.db.read() as session:
        query = select(DeliveryRow).where(DeliveryRow.approval_id == approval_id).order_by(DeliveryRow.created_at)
        return list((await session.execute(query)).scalars())


async def _audit_types(h: Harness, approval_id: str, *, tokens: bool = False) -> list[str]:
    """The approval's audit rows by type, in order; without the tokens.issued row of each message unless asked."""
    async with h.runtime.db.read() as session:
        query = select(AuditRow.type).where(AuditRow.approval_id == approval_id).order_by(AuditRow.seq)
        types = list((await session.execute(query)).scalars())
    return types if tokens else [kind for kind in types if kind != "tokens.issued"]


async def test_time_outs_escalate_step_by_step_then_expire(harness: HarnessFactory) -> None:
    h = await harness()
    approvals = h.runtime.approvals
    created = await h.create(approvers=["oncall"], timeout="30m", escalation=ESCALATION)
    approval_id = created["id"]
    await h.dispatch()
    assert created["next_due_at"] == "2026-01-05T12:10:00Z"
    # Before the first step, erin (leads) may not decide, and nothing is due.
    assert (await approvals.decide_by_id(approval_id=approval_id, choice="acknowledge", actor=ERIN)).reason is (
        DecisionReason.not_approver
    )
    h.clock.advance(timedelta(minutes=9))
    assert await approvals.run_once() == 0

    h.clock.advance(timedelta(minutes=1))
    assert await approvals.run_once() == 1
    assert await approvals.run_once() == 0  # the step fired once
    view = await approvals.view(approval_id=approval_id)
    assert view is not None
    assert view.approval.state is ApprovalState.escalated and view.approval.escalation_level == 1
    assert view.approval.approvers == ["oncall", "leads"]
    assert view.next_due_at is not None and view.next_due_at.isoformat() == "2026-01-05T12:20:00+00:00"
    rows = await _deliveries(h, approval_id)
    # carol is told (fresh message to her address); the message already shown is updated to say "escalated".
    assert [(r.purpose, r.channel, r.target) for r in rows[1:]] == [
        ("update", "chat", None),
        ("notify", "mail", "carol@example.com"),
    ]
    await h.dispatch()
    to_carol = h.buttons(approval_id, target="carol@example.com")
    assert set(to_carol) == {"acknowledge", "deny", "escalate"}
    refreshed = h.recorder.updated[-1][1]
    assert refreshed.approval is not None and refreshed.approval.state is ApprovalState.escalated
    assert refreshed.buttons, "an escalated approval is still open: its messages keep their buttons"

    h.clock.advance(timedelta(minutes=10))
    assert await approvals.run_once() == 1
    h.clock.advance(timedelta(minutes=10))
    assert await approvals.run_once() == 1
    assert await approvals.run_once() == 0
    approval = await approvals.get(approval_id=approval_id)
    assert approval is not None and approval.state is ApprovalState.expired and approval.decided_by is None
    assert await _audit_types(h, approval_id) == [
        "approval.created",
        "decision.refused",
        "approval.escalated",
        "approval.escalated",
        "approval.expired",
    ]
    # Each message that carried buttons had its tokens audited; the expired approval's last messages carry none.
    assert (await _audit_types(h, approval_id, tokens=True)).count("tokens.issued") >= 3
    result = await approvals.decide(token=to_carol["acknowledge"], actor=ALICE)
    assert result.reason is DecisionReason.expired and "expired at 2026-01-05 12:30 UTC" in result.message


async def test_each_step_fires_once_across_replicas_and_restarts(harness: HarnessFactory) -> None:
    h = await harness()
    ids = [(await h.create(approvers=["oncall"], timeout="30m", escalation=ESCALATION))["id"] for _ in range(6)]
    replica = await h.replica()
    try:
        h.clock.advance(timedelta(minutes=10))
        # Two replicas (own connections, own service) and several passes of each, all at once.
        counts = await asyncio.gather(
            *(service.run_once() for service in (h.runtime.approvals, replica.approvals) for _ in range(3))
        )
        assert sum(counts) == len(ids)
    finally:
        await replica.stop()
    # A restart: the first process stops, a fresh one starts on the same database later and catches up.
    await h.runtime.stop()
    h.clock.advance(timedelta(minutes=10))
    fresh = await h.replica()
    try:
        counts = await asyncio.gather(fresh.approvals.run_once(), fresh.approvals.run_once())
        assert sum(counts) == len(ids)
        for approval_id in ids:
            approval = await fresh.approvals.get(approval_id=approval_id)
            assert approval is not None and approval.escalation_level == 2
            assert await _audit_types(h, approval_id) == [
                "approval.created",
                "approval.escalated",
                "approval.escalated",
            ]
            async with fresh.db.read() as session:
                to_carol = await session.execute(
                    select(DeliveryRow.id).where(
                        DeliveryRow.approval_id == approval_id, DeliveryRow.target == "carol@example.com"
                    )
                )
                assert len(to_carol.all()) == 1
    finally:
        await fresh.stop()


async def test_the_scheduler_loop_runs_in_every_replica(harness: HarnessFactory) -> None:
    h = await harness(approvals={"scheduler_interval": 0.05}, run_dispatcher=False)
    created = await h.create(approvers=["oncall"], timeout="30m", escalation=ESCALATION)
    replica = await h.replica(run_scheduler=True)
    try:
        h.clock.advance(timedelta(minutes=31))
        for _ in range(100):
            if await h.state(created["id"]) is ApprovalState.expired:
                break
            await asyncio.sleep(0.05)
        assert await h.state(created["id"]) is ApprovalState.expired
        assert (await _audit_types(h, created["id"])).count("approval.expired") == 1
    finally:
        await replica.stop()


async def test_escalate_choice_runs_the_next_step_now(harness: HarnessFactory) -> None:
    h = await harness()
    approvals = h.runtime.approvals
    created = await h.create(approvers=["oncall"], timeout="30m", escalation=ESCALATION[:1])
    await h.dispatch()
    result = await approvals.decide(token=h.buttons(created["id"])["escalate"], actor=BOB)
    assert result.ok and result.reason is DecisionReason.escalated
    assert result.approval is not None and result.approval.escalation_level == 1
    assert result.approval.state is ApprovalState.escalated
    # The next due time is now the expiry; the step does not fire again at its own time.
    h.clock.advance(timedelta(minutes=10))
    assert await approvals.run_once() == 0
    await h.dispatch()
    carol = h.buttons(created["id"], target="carol@example.com")
    assert set(carol) == {"acknowledge", "deny"}  # nobody left to escalate to
    again = await approvals.decide_by_id(approval_id=created["id"], choice="escalate", actor=ALICE)
    assert again.reason is DecisionReason.cannot_escalate
    # erin came in through the step (leads > managers); her click decides.
    done = await approvals.decide_by_id(approval_id=created["id"], choice="acknowledge", actor=ERIN)
    assert done.ok and done.approval is not None and done.approval.state is ApprovalState.acknowledged


async def test_callback_is_signed_and_retried_after_a_500(harness: HarnessFactory) -> None:
    async with HttpSink() as sink:
        sink.enqueue(Reply(500, "try later"))
        h = await harness(approvals={"callback_allow_private": True})
        created = await h.create(callback_url=sink.url("/hooks/approval"), context={"pipeline": 42})
        result = await h.runtime.approvals.decide_by_id(approval_id=created["id"], choice="deny", actor=BOB)
        assert result.ok
        await h.runtime.dispatcher.run_once()  # type: ignore[union-attr]
        async with h.runtime.db.read() as session:
            callback = (
                await session.execute(select(DeliveryRow).where(DeliveryRow.purpose == DeliveryPurpose.callback))
            ).scalar_one()
        assert callback.status == DeliveryStatus.failed and callback.attempts == 1
        h.clock.advance(timedelta(minutes=10))
        await h.dispatch()
        first, second = await sink.wait_for(2)
        assert first.body == second.body and first.path == "/hooks/approval"
        assert first.headers["X-Ackbot-Delivery-Id"] == second.headers["X-Ackbot-Delivery-Id"]
        secret = h.runtime.approvals.keys.callback_secret
        signing.verify(secret, second.body, second.headers[signing.SIGNATURE_HEADER], now=time.time())
        body = json.loads(second.body)
        assert body == {
            "approval_id": created["id"],
            "tenant": "acme",
            "state": "denied",
            "decided_by": "bob",
            "decided_at": "2026-01-05T12:00:00+00:00",
            "channel": "slack",
            "choice": "deny",
            "context": {"pipeline": 42},
        }
        assert not signing.is_valid("another-secret", second.body, second.headers[signing.SIGNATURE_HEADER])


async def test_callback_secret_from_the_config_and_on_expiry(harness: HarnessFactory) -> None:
    async with HttpSink() as sink:
        h = await harness(
            approvals={"callback_allow_private": True, "callback_secret": "env:ACKBOT_TEST_WEBHOOK_SECRET"}
        )
        await h.create(callback_url=sink.url("/cb"), timeout="10m")
        h.clock.advance(timedelta(minutes=10))
        assert await h.runtime.approvals.run_once() == 1
        await h.dispatch()
        (request,) = await sink.wait_for(1)
        signing.verify("whsec-test-0123456789", request.body, request.headers[signing.SIGNATURE_HEADER])
        assert request.json()["state"] == "expired" and request.json()["decided_by"] is None


async def test_callbacks_to_private_addresses_are_refused_by_default(harness: HarnessFactory) -> None:
    async with HttpSink() as sink:
        h = await harness()
        created = await h.create(callback_url=sink.url("/cb"))
        await h.runtime.approvals.decide_by_id(approval_id=created["id"], choice="deny", actor=BOB)
        await h.dispatch()
        async with h.runtime.db.read() as session:
            callback = (
                await session.execute(select(DeliveryRow).where(DeliveryRow.channel == "_callback"))
            ).scalar_one()
        assert callback.status == DeliveryStatus.dead and "loopback" in (callback.last_error or "")
        assert sink.requests == []


RULE = {
    "name": "deploys",
    "match": {"kinds": ["deploy.*"]},
    "actions": [
        {
            "channel": "chat",
            "approval": {
                "approvers": ["oncall"],
                "timeout": "1h",
                "escalation": [{"after": "15m", "targets": ["mail"], "approvers": ["leads"]}],
            },
        }
    ],
    "on_acknowledge": [{"channel": "console"}],
    "on_deny": [{"channel": "mail"}],
    "on_expire": [{"channel": "console"}, {"channel": "mail"}],
}


async def test_a_rule_action_opens_an_approval_and_branches_on_the_answer(harness: HarnessFactory) -> None:
    h = await harness(rules=[RULE])
    event = {"kind": "deploy.requested", "tenant": "acme", "title": "Deploy api 1.4", "severity": "high"}
    resp = await h.client.post("/api/v1/events", json=event, headers=auth())
    assert resp.status == 202, await resp.text()
    ingested = await resp.json()
    (row,) = await _deliveries_for_alert(h, ingested["alert_id"])
    assert row.approval_id and row.channel == "chat" and row.purpose == "notify"
    approval = await h.runtime.approvals.get(approval_id=row.approval_id)
    assert approval is not None and approval.alert_id == ingested["alert_id"] and approval.rule == "deploys"
    assert approval.title == "Deploy api 1.4" and approval.context["event_id"] == ingested["event_id"]
    await h.dispatch()
    (note,) = h.recorder.sent
    assert note.alert is not None and note.approval is not None
    assert [b.choice for b in note.buttons] == ["acknowledge", "deny", "escalate"]

    # The approval opened inside the ingest transaction is audited after it, by the first decision here.
    assert await _audit_types(h, row.approval_id) == []
    result = await h.runtime.approvals.decide(token=note.buttons[0].token, actor=ALICE)
    assert result.ok
    assert await _audit_types(h, row.approval_id) == ["approval.created", "approval.acknowledged"]
    follow_ups = [
        (r.channel, (r.extra or {}).get("follow_up"))
        for r in await _deliveries(h, row.approval_id)
        if r.purpose == "notify" and r.extra
    ]
    assert follow_ups == [("console", "on_acknowledge")]
    async with h.runtime.db.read() as session:
        alert = await session.get(AlertRow, ingested["alert_id"])
    assert alert is not None and alert.status == "acknowledged" and alert.acknowledged_by == "alice"
    await h.dispatch()
    followed = [n for n in h.recorder.sent if n.approval and n.buttons == [] and n.purpose == DeliveryPurpose.notify]
    assert followed == []  # the follow-up went to the console channel, not to the recorder

    # Another one expires: on_expire's two actions are queued, once.
    other = {**event, "dedup_key": "second"}
    resp = await h.client.post("/api/v1/events", json=other, headers=auth())
    second_alert = (await resp.json())["alert_id"]
    (second,) = await _deliveries_for_alert(h, second_alert)
    assert await h.runtime.approvals.run_once() == 0  # nothing due; the deferred creation audit is written
    assert await _audit_types(h, second.approval_id or "") == ["approval.created"]
    h.clock.advance(timedelta(hours=1))
    assert await h.runtime.approvals.run_once() == 1
    assert await h.runtime.approvals.run_once() == 0
    assert await _audit_types(h, second.approval_id or "") == ["approval.created", "approval.expired"]
    hooks = [(r.extra or {}).get("follow_up") for r in await _deliveries(h, second.approval_id or "")]
    assert hooks.count("on_expire") == 2


async def _deliveries_for_alert(h: Harness, alert_id: str) -> list[DeliveryRow]:
    async with h.runtime.db.read() as session:
        query = select(DeliveryRow).where(DeliveryRow.alert_id == alert_id).order_by(DeliveryRow.created_at)
        return list((await session.execute(query)).scalars())


async def test_spent_nonces_are_pruned_after_their_tokens_expire(harness: HarnessFactory) -> None:
    h = await harness(tokens={"ttl": "5m"})
    created = await h.create(quorum=2, approvers=["oncall"])
    await h.dispatch()
    result = await h.runtime.approvals.decide(token=h.buttons(created["id"])["acknowledge"], actor=ALICE)
    assert result.reason is DecisionReason.vote_recorded
    assert await h.count(SpentNonceRow) == 1
    await h.runtime.approvals.run_once()
    assert await h.count(SpentNonceRow) == 1
    h.clock.advance(timedelta(minutes=7))
    await h.runtime.approvals.run_once()
    assert await h.count(SpentNonceRow) == 0
