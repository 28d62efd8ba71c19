"""The decision machine alone: snapshots and intents in, refusals and plans out, with no database at all.

The same decisions run through the stores in tests/test_decision_table.py; here each case says what the plan
holds (the values written on the version read, the nonce, the vote, the deliveries, the audit rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.approvals import machine
from core.approvals.directory import Directory
from core.approvals.models import DecisionReason
from core.approvals.plans import Intent, IntentKind, Policy, Shown, Snapshot
from core.models.approvals import Approval, ApprovalState
from core.models.deliveries import DeliveryPurpose
from core.models.people import Actor, Group, Person
from core.models.rules import EscalationStep, Rule
from core.tokens import TokenClaims

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
PEOPLE = [
    Person(name="alice", display_name="Alice Example", identities={"slack": "U0ALICE"}),
    Person(name="bob", identities={"slack": "U0BOB"}),
    Person(name="carol", identities={"email": "carol@example.com"}),
]
GROUPS = [Group(name="oncall", members=["alice", "bob"])]
ALICE = Actor(platform="slack", id="U0ALICE")
BOB = Actor(platform="slack", id="U0BOB")
RULE = Rule.model_validate(
    {
        "name": "gate",
        "match": {"kinds": ["deploy.*"]},
        "actions": [{"channel": "chat"}],
        "on_deny": [{"channel": "chat"}, {"channel": "gone"}],
    }
)


def policy() -> Policy:
    return Policy(
        directory=Directory(PEOPLE, GROUPS),
        channel_types=lambda: {"chat": "slack", "mail": "email", "_callback": "webhook"},
        rules=lambda: [RULE],
    )


def snapshot(**fields: Any) -> Snapshot:
    internals = {
        key: fields.pop(key)
        for key in ("version", "created_audited", "votes", "shown", "notified", "nonce_spent")
        if key in fields
    }
    approval = Approval.model_validate(
        {
            "id": "apr_1",
            "tenant": "acme",
            "title": "May I isolate host X?",
            "approvers": ["oncall"],
            "targets": ["chat"],
            "created_at": NOW - timedelta(minutes=5),
            "expires_at": NOW + timedelta(hours=1),
            **fields,
        }
    )
    return Snapshot(
        approval=approval,
        version=internals.get("version", 3),
        event_id=None,
        created_by="api",
        created_audited=internals.get("created_audited", True),
        next_due_at=approval.expires_at,
        votes=internals.get("votes", ()),
        shown=internals.get("shown", (Shown("chat", None, None, {"channel": "C1", "ts": "1.1"}),)),
        notified=internals.get("notified", frozenset({("chat", None)})),
        nonce_spent=internals.get("nonce_spent", False),
    )


def click(choice: str, actor: Actor = ALICE, **claims: Any) -> Intent:
    token = TokenClaims.model_validate(
        {
            "t": "acme",
            "a": "apr_1",
            "ch": "chat",
            "c": choice,
            "n": "n" * 22,
            "iat": int(NOW.timestamp()) - 10,
            "exp": int(NOW.timestamp()) + 600,
            "k": "k1",
            **claims,
        }
    )
    return Intent(kind=IntentKind.click, actor=actor, choice=choice, claims=token)


def test_an_acknowledgement_plans_the_decision_on_the_version_read() -> None:
    plan = machine.decide(snapshot(), click("acknowledge"), now=NOW, policy=policy())
    assert plan.result.ok and plan.result.reason is DecisionReason.decided
    assert plan.result.message == "Acknowledged by Alice Example."
    assert plan.version == 3 and plan.values["state"] == "acknowledged" and plan.values["decided_by"] == "alice"
    assert plan.nonce is not None and plan.vote is not None and plan.vote["person"] == "alice"
    assert [(q.channel, q.purpose) for q in plan.deliveries] == [("chat", DeliveryPurpose.update)]
    assert [note["type"] for note in plan.audit] == ["approval.acknowledged"]
    assert plan.votes is not None and [vote["person"] for vote in plan.votes] == ["alice"]


def test_a_vote_below_the_quorum_moves_only_the_version() -> None:
    plan = machine.decide(snapshot(quorum=2), click("acknowledge"), now=NOW, policy=policy())
    assert plan.result.reason is DecisionReason.vote_recorded and plan.result.votes == 1
    assert plan.version == 3 and dict(plan.values) == {} and plan.vote is not None
    assert [q.key for q in plan.deliveries] and plan.deliveries[0].purpose is DeliveryPurpose.update
    assert [note["type"] for note in plan.audit] == ["approval.vote"]


def test_the_second_vote_of_one_person_is_refused_and_only_audited() -> None:
    voted = ({"person": "alice", "choice": "acknowledge", "platform": "slack", "channel": "chat", "at": "x"},)
    plan = machine.decide(snapshot(quorum=2, votes=voted), click("acknowledge"), now=NOW, policy=policy())
    assert plan.refused and plan.result.reason is DecisionReason.already_voted
    assert plan.version is None and not plan.values and not plan.deliveries and plan.nonce is None
    assert [note["type"] for note in plan.audit] == ["decision.refused"]


def test_a_deny_queues_the_callback_and_the_rules_follow_ups_and_warns_of_a_missing_channel() -> None:
    shown = (Shown("chat", None, None, {"channel": "C1", "ts": "1.1"}),)
    plan = machine.decide(
        snapshot(rule="gate", callback_url="http://127.0.0.1:9/cb", shown=shown),
        click("deny"),
        now=NOW,
        policy=policy(),
    )
    assert plan.result.message == "Denied by Alice Example."
    assert [(q.channel, q.purpose) for q in plan.deliveries] == [
        ("chat", DeliveryPurpose.update),
        ("_callback", DeliveryPurpose.callback),
        ("chat", DeliveryPurpose.notify),
    ]
    assert plan.warnings == ("rule gate on_deny: channel gone is not configured; skipped",)


def test_the_clicked_message_is_held_for_the_clicks_own_answer() -> None:
    intent = click("deny")
    held = Intent(**{**intent.__dict__, "answering": {"channel": "C1", "ts": "1.1"}, "holder": "worker-1"})
    plan = machine.decide(snapshot(), held, now=NOW, policy=policy())
    assert [q.held_by for q in plan.deliveries] == ["worker-1"] and not plan.wakes_outbox
    other = Intent(**{**held.__dict__, "answering": {"channel": "C2", "ts": "9.9"}})
    assert machine.decide(snapshot(), other, now=NOW, policy=policy()).wakes_outbox


@pytest.mark.parametrize(
    ("fields", "intent", "reason"),
    [
        ({}, click("acknowledge", BOB, s="alice"), DecisionReason.wrong_subject),
        ({"approvers": ["carol"]}, click("acknowledge"), DecisionReason.not_approver),
        ({"requester": "alice"}, click("acknowledge"), DecisionReason.self_approval),
        ({"nonce_spent": True}, click("acknowledge"), DecisionReason.replayed),
        (
            {"state": "denied", "decided_by": "bob", "decided_at": NOW},
            click("acknowledge"),
            DecisionReason.already_decided,
        ),
        ({"expires_at": NOW}, click("acknowledge"), DecisionReason.expired),
        ({}, click("escalate"), DecisionReason.cannot_escalate),
        ({}, click("acknowledge", t="globex"), DecisionReason.wrong_tenant),
        ({}, click("acknowledge", Actor(platform="slack", id="U0NOBODY")), DecisionReason.unknown_actor),
        ({}, click("maybe"), DecisionReason.wrong_choice),
    ],
)
def test_refusals_write_nothing_but_their_audit_row(fields: dict[str, Any], intent: Intent, reason: str) -> None:
    plan = machine.decide(snapshot(**fields), intent, now=NOW, policy=policy())
    assert plan.refused and plan.result.reason is reason, plan.result
    assert plan.version is None and not plan.deliveries and plan.nonce is None and plan.vote is None
    assert [note["type"] for note in plan.audit] == ["decision.refused"]
    assert plan.audit[0]["data"]["reason"] == reason


def test_a_refusal_of_an_approval_whose_creation_is_not_audited_writes_that_row_first() -> None:
    plan = machine.decide(snapshot(created_audited=False, approvers=["carol"]), click("deny"), now=NOW, policy=policy())
    assert plan.refused and plan.version == 3 and dict(plan.values) == {"created_audited": True}
    assert [note["type"] for note in plan.audit] == ["approval.created", "decision.refused"]


def test_an_escalation_widens_the_approvers_and_messages_only_new_conversations() -> None:
    steps = [EscalationStep(after=timedelta(minutes=1), targets=["chat", "person:carol"], approvers=["carol"])]
    plan = machine.decide(snapshot(escalation=steps), click("escalate"), now=NOW, policy=policy())
    assert plan.result.reason is DecisionReason.escalated and plan.result.message == "Escalated by Alice Example."
    assert plan.values["escalation_level"] == 1 and plan.values["approvers"] == ["oncall", "carol"]
    assert [(q.channel, q.purpose, q.target) for q in plan.deliveries] == [
        ("chat", DeliveryPurpose.update, None),
        ("mail", DeliveryPurpose.notify, "carol@example.com"),
    ]


def test_the_scheduler_expires_what_is_due_and_leaves_what_is_not() -> None:
    due = snapshot(expires_at=NOW - timedelta(seconds=1), created_at=NOW - timedelta(hours=1))
    plan = machine.tick(due, now=NOW, policy=policy())
    assert plan is not None and plan.result.ok and plan.values["state"] == "expired"
    assert [note["type"] for note in plan.audit] == ["approval.expired"]
    assert machine.tick(snapshot(), now=NOW, policy=policy()) is None


def test_a_cancel_of_a_final_approval_is_refused_without_naming_it() -> None:
    final = snapshot(state=ApprovalState.acknowledged, decided_by="bob", decided_at=NOW)
    intent = Intent(kind=IntentKind.cancel, actor=Actor(platform="api", id="ci"))
    plan = machine.decide(final, intent, now=NOW, policy=policy())
    assert plan.refused and plan.result.reason is DecisionReason.already_decided
    assert plan.audit[0]["approval_id"] is None and plan.audit[0]["actor"] == "api:ci"
