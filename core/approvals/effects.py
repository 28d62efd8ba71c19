"""What a move of an approval causes, as data: the updates of every message that shows it, the signed callback,
the rule's follow-ups, the clicked message held for the click's own answer, and the audit rows."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from core.approvals.callback import CALLBACK_CHANNEL
from core.approvals.plans import Intent, Policy, Queued, Snapshot
from core.approvals.targets import delivery_key
from core.models.approvals import Approval, ApprovalState
from core.models.deliveries import DeliveryPurpose
from core.models.people import Actor, Person

# The rule's actions each final state (and an escalation) sets off.
FOLLOW_UP_HOOKS = {
    ApprovalState.acknowledged: "on_acknowledge",
    ApprovalState.denied: "on_deny",
    ApprovalState.escalated: "on_escalate",
    ApprovalState.expired: "on_expire",
}
# How long the update of a clicked message is held for the click's own answer (Slack's response_url, which the
# listener allows 10 s) before the outbox edits the message itself: only if the process died in between.
ANSWER_HOLD = timedelta(seconds=30)


def final_deliveries(
    snapshot: Snapshot, after: Approval, *, now: datetime, policy: Policy
) -> tuple[list[Queued], list[str]]:
    """A final state: an update of every message that shows it, the signed callback, the rule's follow-ups."""
    hook = FOLLOW_UP_HOOKS.get(after.state)
    follow_ups, warnings = rule_follow_ups(after, hook, after.state.value, policy) if hook else ([], [])
    return [
        *message_updates(snapshot, after, now=now, stage=after.state.value),
        *signed_callback(snapshot, after),
        *follow_ups,
    ], warnings


def message_updates(snapshot: Snapshot, after: Approval, *, now: datetime, stage: str) -> list[Queued]:
    updates = []
    for shown in snapshot.shown:
        extra: dict[str, Any] = {"person": shown.person} if shown.person else {}
        if shown.message_ref is not None:
            # What the update edits, known now: the dispatcher need not look it up again.
            extra["message_ref"] = dict(shown.message_ref)
        updates.append(
            Queued(
                channel=shown.channel,
                purpose=DeliveryPurpose.update,
                key=delivery_key("approval", after.id, "update", stage, shown.channel, shown.target or ""),
                target=shown.target,
                rule=after.rule,
                extra=extra or None,
            )
        )
    return updates


def signed_callback(snapshot: Snapshot, after: Approval) -> list[Queued]:
    if not after.callback_url:
        return []
    state = after.state.value
    body = {
        "approval_id": after.id,
        "tenant": after.tenant,
        "state": state,
        "decided_by": after.decided_by,
        "decided_at": after.decided_at.isoformat() if after.decided_at else None,
        "channel": after.decision_channel,
        "choice": after.decided_choice.value if after.decided_choice else None,
        "context": after.context,
    }
    return [
        Queued(
            channel=CALLBACK_CHANNEL,
            purpose=DeliveryPurpose.callback,
            key=delivery_key("approval", after.id, "callback", state),
            extra={"url": after.callback_url, "body": body},
        )
    ]


def rule_follow_ups(after: Approval, hook: str, stage: str, policy: Policy) -> tuple[list[Queued], list[str]]:
    if not after.rule:
        return [], []
    rule = next((r for r in policy.rules() if r.name == after.rule), None)
    if rule is None:
        return [], [f"rule {after.rule} is gone; its {hook} actions are skipped"]
    known = policy.channel_types()
    queued, warnings = [], []
    for index, action in enumerate(getattr(rule, hook)):
        if action.channel not in known:
            warnings.append(f"rule {rule.name} {hook}: channel {action.channel} is not configured; skipped")
            continue
        queued.append(
            Queued(
                channel=action.channel,
                purpose=DeliveryPurpose.notify,
                key=delivery_key("approval", after.id, hook, stage, index),
                rule=rule.name,
                action_index=index,
                extra={"follow_up": hook},
            )
        )
    return queued, warnings


def hold(deliveries: list[Queued], intent: Intent, now: datetime) -> list[Queued]:
    """The clicked message's update, queued claimed by the surface's worker for the click's own answer."""
    if not intent.answering or not intent.holder:
        return deliveries
    ref = dict(intent.answering)
    for index, queued in enumerate(deliveries):
        if queued.purpose is DeliveryPurpose.update and (queued.extra or {}).get("message_ref") == ref:
            held = replace(queued, held_by=intent.holder, held_until=now + ANSWER_HOLD)
            return [*deliveries[:index], held, *deliveries[index + 1 :]]
    return deliveries


def creation_note(snapshot: Snapshot, after: Approval) -> dict[str, Any]:
    return {
        "type": "approval.created",
        "at": after.created_at,
        "tenant": after.tenant,
        "approval_id": after.id,
        "alert_id": after.alert_id,
        "actor": snapshot.created_by,
        "actor_platform": "rule",
        "data": {"targets": list(after.targets), "approvers": list(after.approvers), "quorum": after.quorum},
    }


def decision_note(
    after: Approval, kind: str, person: Person, actor: Actor, now: datetime, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": kind,
        "at": now,
        "tenant": after.tenant,
        "approval_id": after.id,
        "alert_id": after.alert_id,
        "actor": person.name,
        "actor_platform": actor.platform,
        "data": {**details, "actor_id": actor.id, "state": after.state.value},
    }


def transition_note(
    after: Approval, kind: str, now: datetime, actor: str, platform: str, data: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "type": kind,
        "at": now,
        "tenant": after.tenant,
        "approval_id": after.id,
        "alert_id": after.alert_id,
        "actor": actor,
        "actor_platform": platform,
        "data": data,
    }
