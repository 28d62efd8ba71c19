"""The decision machine: an approval as read, and what someone or something asks of it, in; a plan out.

Pure: no I/O, no database, no logging. Every way an approval changes (a click, a typed command, a cancel, the
scheduler's escalation step or expiry) is asked here, and the answer is either a refusal or a plan: the columns to
write on the version that was read, the nonce to spend, the vote, every delivery to queue, the audit rows and the
result to answer. The approvals store applies a plan exactly once (core/store/approvals.py); the web page's preview
asks the same question and applies nothing.

The states and their moves, declared once (MOVES):

    pending | escalated --acknowledge (at quorum)--> acknowledged
                        --acknowledge (below it)---> (a vote; the state stays)
                        --deny--------------------> denied
                        --escalate (a step left)--> escalated (next level)
                        --the expiry--------------> expired
                        --cancel------------------> cancelled
    acknowledged | denied | expired | cancelled: final, every intent is refused
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from core.approvals.directory import Directory
from core.approvals.effects import (
    creation_note,
    decision_note,
    final_deliveries,
    hold,
    message_updates,
    rule_follow_ups,
    signed_callback,
    transition_note,
)
from core.approvals.models import DecisionReason, DecisionResult
from core.approvals.plans import Intent, IntentKind, NonceSpend, Plan, Policy, Queued, Snapshot
from core.approvals.targets import delivery_key, plan_quietly
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.deliveries import DeliveryPurpose
from core.models.people import ALL_TENANTS, Person
from core.models.rules import EscalationStep
from core.tokens import TokenClaims, nonce_digest

# What each move leads to, from an open state (pending or escalated); a final state has no moves.
OPEN = frozenset({ApprovalState.pending, ApprovalState.escalated})
MOVES: dict[str, ApprovalState] = {
    "acknowledge": ApprovalState.acknowledged,
    "deny": ApprovalState.denied,
    "escalate": ApprovalState.escalated,
    "expire": ApprovalState.expired,
    "cancel": ApprovalState.cancelled,
}
# The platform whose clicks a chat channel's buttons come back from.
CLICK_PLATFORM = {"slack": "slack", "teams": "teams"}
TAKEN = frozenset({DecisionReason.decided, DecisionReason.vote_recorded, DecisionReason.escalated})


class _Refusal(Exception):
    def __init__(self, result: DecisionResult) -> None:
        super().__init__(result.message)
        self.result = result


# ---------------------------------------------------------------- asking


def decide(snapshot: Snapshot | None, intent: Intent, *, now: datetime, policy: Policy) -> Plan:
    """The plan for an intent on an approval as read (None: no such approval), or its refusal."""
    if intent.kind is IntentKind.tick:
        raise ValueError("the scheduler's intent is tick(), not decide()")
    person: Person | None = None
    about: Approval | None = None  # the approval a refusal is audited against
    try:
        if intent.kind is IntentKind.bad_token:
            refusal = _stale_token_refusal(snapshot, intent, policy)
            about = refusal.approval
            raise _Refusal(refusal)
        if intent.kind is IntentKind.cancel:
            return _cancel(snapshot, intent, now=now, policy=policy)
        choice = _choice(intent)
        person = policy.directory.resolve(intent.actor)
        if snapshot is None:
            raise _Refusal(_refusal(DecisionReason.not_found, "No such approval."))
        about = snapshot.approval
        person = _authorize(snapshot.approval, choice, intent, person, policy, now)
        if snapshot.nonce_spent and intent.claims is not None:
            message = "This button or link was used already."
            raise _Refusal(_result(DecisionReason.replayed, message, about, choice, person))
        if choice is Choice.escalate:
            return _escalate(snapshot, intent, person, now=now, policy=policy)
        if choice is Choice.acknowledge:
            return _acknowledge(snapshot, intent, person, now=now, policy=policy)
        return _deny(snapshot, intent, person, now=now, policy=policy)
    except _Refusal as refusal:
        return _refused(snapshot, intent, refusal.result, person, about, now=now)


def tick(snapshot: Snapshot | None, *, now: datetime, policy: Policy) -> Plan | None:
    """The scheduler's step for a due approval: expire it, fire its escalation step, or set its due time right.

    None when there is nothing to do (not due, no longer open, or moved by someone else first).
    """
    if snapshot is None:
        return None
    approval = snapshot.approval
    if approval.state not in OPEN or snapshot.next_due_at is None or snapshot.next_due_at > now:
        return None
    level = approval.escalation_level
    steps = approval.escalation
    if now >= approval.expires_at:
        values = {"state": MOVES["expire"].value, "decided_at": now, "next_due_at": None, "updated_at": now}
        after = _moved(approval, values)
        deliveries, warnings = final_deliveries(snapshot, after, now=now, policy=policy)
        note = transition_note(after, "approval.expired", now, "scheduler", "ackbot", {"level": level})
        result = DecisionResult(ok=True, reason=DecisionReason.expired, message="Expired.", approval=after)
        return _plan(snapshot, after, values, result, deliveries=deliveries, notes=[note], warnings=warnings)
    if level < len(steps) and approval.created_at + steps[level].after <= now:
        return _escalation_plan(snapshot, now=now, policy=policy, actor="scheduler", platform="ackbot", details=None)
    # The due time was early (the row was edited by hand, say): set it right, nothing else (ok False: nothing moved).
    due = next_due(created_at=approval.created_at, expires_at=approval.expires_at, steps=steps, level=level)
    result = DecisionResult(ok=False, reason=DecisionReason.not_found, message="Not due yet.", approval=approval)
    return Plan(result=result, approval_id=approval.id, version=snapshot.version, values={"next_due_at": due})


def next_due(*, created_at: datetime, expires_at: datetime, steps: Sequence[EscalationStep], level: int) -> datetime:
    """When the scheduler must act next: the next escalation step's time, else the expiry."""
    if level < len(steps):
        return min(created_at + steps[level].after, expires_at)
    return expires_at


def final_refusal(approval: Approval, directory: Directory) -> DecisionResult:
    """The refusal of any intent on an approval that is final already: by whom and when, or that it expired."""
    if approval.state is ApprovalState.expired:
        return _refusal(
            DecisionReason.expired,
            f"This approval expired at {_when(approval.decided_at or approval.expires_at)} without a decision.",
            approval,
        )
    who = directory.display(approval.decided_by) or "someone"
    return _refusal(
        DecisionReason.already_decided,
        f"Already {approval.state.value} by {who} at {_when(approval.decided_at)}.",
        approval,
    )


def token_details(claims: TokenClaims | None) -> dict[str, Any]:
    """What the audit log keeps of a token: choice, channel, delivery, key id and a hash of its nonce."""
    if claims is None:
        return {}
    return {
        "choice": claims.choice,
        "channel": claims.channel,
        "delivery_id": claims.delivery_id,
        "kid": claims.kid,
        "nonce_hash": nonce_digest(claims.nonce),
    }


# ---------------------------------------------------------------- the checks


def _authorize(
    approval: Approval, choice: Choice, intent: Intent, person: Person | None, policy: Policy, now: datetime
) -> Person:
    """The person a click or command is recorded as, or the refusal that says why it may not happen."""
    directory = policy.directory
    claims = intent.claims
    actor = intent.actor

    def refuse(reason: DecisionReason, message: str) -> _Refusal:
        return _Refusal(_result(reason, message, approval, choice, person))

    if (claims is not None and claims.tenant != approval.tenant) or (
        intent.tenant is not None and intent.tenant != approval.tenant
    ):
        raise refuse(DecisionReason.wrong_tenant, "This token belongs to another tenant.")
    if choice not in approval.choices:
        raise refuse(DecisionReason.wrong_choice, f"{choice.value!r} is not one of this approval's choices.")
    if claims is not None and actor.platform in CLICK_PLATFORM.values():
        # A token is bound to the channel it was sent on: a Slack button comes back from Slack.
        sent_on = CLICK_PLATFORM.get(policy.channel_types().get(claims.channel, ""))
        if sent_on is not None and sent_on != actor.platform:
            raise refuse(DecisionReason.wrong_channel, "This button belongs to a message on another platform.")
    if approval.state not in OPEN:
        refusal = final_refusal(approval, directory)
        raise refuse(refusal.reason, refusal.message)
    if now >= approval.expires_at:
        raise refuse(DecisionReason.expired, f"This approval expired at {_when(approval.expires_at)}.")
    if actor.platform == "web" and (claims is None or claims.subject is None):
        raise refuse(
            DecisionReason.no_subject,
            "This link was not sent to a particular person, so it cannot record who decided. "
            "Use the buttons in chat, or have the request sent to you (person:NAME).",
        )
    if person is None:
        raise refuse(
            DecisionReason.unknown_actor,
            f"ackbot does not know who you are ({actor.platform} id {actor.id}); "
            "an administrator can add your identity to people in the configuration.",
        )
    if claims is not None and claims.subject is not None and claims.subject != person.name:
        raise refuse(DecisionReason.wrong_subject, "This link was sent to someone else.")
    if ALL_TENANTS not in person.tenants and approval.tenant not in person.tenants:
        # Approvers left open ("every configured person") must not reach across tenants: people see theirs only.
        raise refuse(
            DecisionReason.wrong_tenant,
            f"{directory.display(person.name)} does not see tenant {approval.tenant!r}, so cannot decide this request.",
        )
    if not directory.may_decide(person, approval.approvers):
        raise refuse(
            DecisionReason.not_approver, f"{directory.display(person.name)} is not an approver of this request."
        )
    if choice is Choice.acknowledge and not approval.allow_self_approval:
        if directory.is_requester(person, approval.requester):
            raise refuse(DecisionReason.self_approval, "You asked for this; someone else has to approve it.")
    if choice is Choice.escalate and approval.escalation_level >= len(approval.escalation):
        raise refuse(DecisionReason.cannot_escalate, "There is nobody left to escalate to.")
    return person


def _stale_token_refusal(snapshot: Snapshot | None, intent: Intent, policy: Policy) -> DecisionResult:
    # A genuine token that ran out (or whose key was retired) says what became of its approval.
    refusal = intent.refusal
    if refusal is None:
        raise ValueError("a bad_token intent carries its refusal")
    if not intent.stale or snapshot is None or intent.claims is None:
        return refusal
    approval = snapshot.approval
    if approval.tenant != intent.claims.tenant:
        return refusal
    if approval.state not in OPEN:
        return final_refusal(approval, policy.directory)
    return refusal.model_copy(update={"approval": approval, "quorum": approval.quorum})


# ---------------------------------------------------------------- the moves


def _acknowledge(snapshot: Snapshot, intent: Intent, person: Person, *, now: datetime, policy: Policy) -> Plan:
    approval = snapshot.approval
    acks = [vote for vote in snapshot.votes if vote["choice"] == Choice.acknowledge.value]
    if any(vote["person"] == person.name for vote in snapshot.votes):
        count = len(acks)
        raise _Refusal(
            _result(
                DecisionReason.already_voted,
                f"You acknowledged already; {approval.quorum - count} more acknowledgement(s) needed.",
                approval,
                Choice.acknowledge,
                person,
                count,
            )
        )
    channel = _channel(intent)
    vote = {
        "approval_id": approval.id,
        "person": person.name,
        "choice": Choice.acknowledge.value,
        "actor_platform": intent.actor.platform,
        "actor_id": intent.actor.id,
        "channel": channel,
        "created_at": now,
    }
    votes = (
        *snapshot.votes,
        {
            "person": person.name,
            "choice": "acknowledge",
            "platform": intent.actor.platform,
            "channel": channel,
            "at": now.isoformat(),
        },
    )
    count = len(acks) + 1
    details = {**_details(intent), "votes": count}
    if count < approval.quorum:
        # Every message shows the count and gets fresh buttons (the clicked one's nonce is spent).
        deliveries = message_updates(snapshot, approval, now=now, stage=f"vote{count}")
        note = decision_note(approval, "approval.vote", person, intent.actor, now, details)
        result = _result(
            DecisionReason.vote_recorded,
            f"Acknowledgement recorded: {count} of {approval.quorum}.",
            approval,
            Choice.acknowledge,
            person,
            count,
        )
        return _plan(snapshot, approval, {}, result, intent=intent, vote=vote, deliveries=deliveries, notes=[note])
    values = _final_values(MOVES["acknowledge"], Choice.acknowledge, person.name, channel, now)
    after = _moved(approval, values)
    deliveries, warnings = final_deliveries(snapshot, after, now=now, policy=policy)
    note = decision_note(after, "approval.acknowledged", person, intent.actor, now, details)
    name = policy.directory.display(person.name)
    result = _result(DecisionReason.decided, f"Acknowledged by {name}.", after, Choice.acknowledge, person, count)
    return _plan(
        snapshot,
        after,
        values,
        result,
        intent=intent,
        vote=vote,
        deliveries=hold(deliveries, intent, now),
        notes=[note],
        votes=votes,
        warnings=warnings,
    )


def _deny(snapshot: Snapshot, intent: Intent, person: Person, *, now: datetime, policy: Policy) -> Plan:
    values = _final_values(MOVES["deny"], Choice.deny, person.name, _channel(intent), now)
    after = _moved(snapshot.approval, values)
    deliveries, warnings = final_deliveries(snapshot, after, now=now, policy=policy)
    note = decision_note(after, "approval.denied", person, intent.actor, now, _details(intent))
    name = policy.directory.display(person.name)
    result = _result(DecisionReason.decided, f"Denied by {name}.", after, Choice.deny, person)
    return _plan(
        snapshot,
        after,
        values,
        result,
        intent=intent,
        deliveries=hold(deliveries, intent, now),
        notes=[note],
        votes=snapshot.votes,
        warnings=warnings,
    )


def _escalate(snapshot: Snapshot, intent: Intent, person: Person, *, now: datetime, policy: Policy) -> Plan:
    plan = _escalation_plan(
        snapshot, now=now, policy=policy, actor=person.name, platform=_channel(intent), details=_details(intent)
    )
    name = policy.directory.display(person.name)
    result = _result(DecisionReason.escalated, f"Escalated by {name}.", plan.result.approval, Choice.escalate, person)
    return replace(plan, result=result, nonce=_nonce(intent))


def _escalation_plan(
    snapshot: Snapshot, *, now: datetime, policy: Policy, actor: str, platform: str, details: dict[str, Any] | None
) -> Plan:
    """The next escalation step: the approvers widened, the step's targets messaged, every message updated."""
    approval = snapshot.approval
    steps = approval.escalation
    level = approval.escalation_level
    step = steps[level]
    values = {
        "state": MOVES["escalate"].value,
        "escalation_level": level + 1,
        "approvers": [*approval.approvers, *(a for a in step.approvers if a not in approval.approvers)],
        "targets": [*approval.targets, *(t for t in step.targets if t not in approval.targets)],
        "next_due_at": next_due(
            created_at=approval.created_at, expires_at=approval.expires_at, steps=steps, level=level + 1
        ),
        "updated_at": now,
    }
    after = _moved(approval, values)
    stage = f"level{level + 1}"
    deliveries = message_updates(snapshot, after, now=now, stage=stage)
    plans, warnings = plan_quietly(policy.directory, policy.channel_types_for(approval.tenant), step.targets)
    for target in plans:
        # A conversation that shows the approval already gets the update above, not a second message.
        if (target.channel, target.target) not in snapshot.notified:
            deliveries.append(
                Queued(
                    channel=target.channel,
                    purpose=DeliveryPurpose.notify,
                    key=delivery_key("approval", approval.id, "notify", stage, target.channel, target.target or ""),
                    target=target.target,
                    rule=approval.rule,
                    extra={"person": target.person} if target.person else None,
                )
            )
    follow_ups, missing = rule_follow_ups(after, "on_escalate", stage, policy)
    data = {**(details or {}), "level": level + 1}
    if details is None:
        data["timeout"] = True
    note = transition_note(after, "approval.escalated", now, actor, platform, data)
    result = DecisionResult(ok=True, reason=DecisionReason.escalated, message="Escalated.", approval=after)
    return _plan(
        snapshot,
        after,
        values,
        result,
        deliveries=[*deliveries, *follow_ups],
        notes=[note],
        warnings=[*warnings, *missing],
    )


def _cancel(snapshot: Snapshot | None, intent: Intent, *, now: datetime, policy: Policy) -> Plan:
    # A withdrawal that is refused is audited without the approval it named (about stays None).
    if snapshot is None or (intent.tenant is not None and snapshot.approval.tenant != intent.tenant):
        raise _Refusal(_refusal(DecisionReason.not_found, "No such approval."))
    approval = snapshot.approval
    if approval.state not in OPEN:
        raise _Refusal(final_refusal(approval, policy.directory))
    by = intent.actor.id
    values = _final_values(MOVES["cancel"], None, by, "api", now)
    after = _moved(approval, values)
    deliveries = [*message_updates(snapshot, after, now=now, stage="cancelled"), *signed_callback(snapshot, after)]
    note = transition_note(after, "approval.cancelled", now, by, "api", None)
    result = DecisionResult(
        ok=True, reason=DecisionReason.cancelled, message=f"Cancelled by {by}.", approval=after, quorum=after.quorum
    )
    return _plan(snapshot, after, values, result, deliveries=deliveries, notes=[note], votes=snapshot.votes)


def _refused(
    snapshot: Snapshot | None,
    intent: Intent,
    result: DecisionResult,
    person: Person | None,
    about: Approval | None,
    *,
    now: datetime,
) -> Plan:
    """A refusal changes nothing but the audit log, where it is written down (after the deferred creation row)."""
    actor = intent.actor
    claims = intent.claims
    approval_id = about.id if about else (claims.approval_id if claims else None)
    note = {
        "type": "decision.refused",
        "at": now,
        "tenant": about.tenant if about else (claims.tenant if claims else None),
        "approval_id": approval_id,
        "alert_id": about.alert_id if about else None,
        "actor": person.name if person else f"{actor.platform}:{actor.id}"[:200],
        "actor_platform": actor.platform,
        "data": {**_details(intent), "reason": result.reason.value, "actor_id": actor.id[:200]},
    }
    if snapshot is None or approval_id != snapshot.approval.id or snapshot.created_audited:
        return Plan(result=result, approval_id=approval_id, audit=(note,))
    return Plan(
        result=result,
        approval_id=approval_id,
        version=snapshot.version,
        values={"created_audited": True},
        audit=(creation_note(snapshot, snapshot.approval), note),
    )


# ---------------------------------------------------------------- what a move causes


def _plan(
    snapshot: Snapshot,
    after: Approval,
    values: dict[str, Any],
    result: DecisionResult,
    *,
    intent: Intent | None = None,
    vote: Mapping[str, Any] | None = None,
    deliveries: Sequence[Queued] = (),
    notes: Sequence[Mapping[str, Any]] = (),
    votes: Sequence[Mapping[str, Any]] | None = None,
    warnings: Sequence[str] = (),
) -> Plan:
    # The deferred "approval.created" row goes first, describing the approval as this plan leaves it.
    audit = list(notes)
    if not snapshot.created_audited:
        audit.insert(0, creation_note(snapshot, after))
        values = {**values, "created_audited": True}
    return Plan(
        result=result,
        approval_id=after.id,
        version=snapshot.version,
        values=values,
        nonce=_nonce(intent) if intent is not None else None,
        vote=vote,
        deliveries=tuple(deliveries),
        audit=tuple(audit),
        votes=tuple(votes) if votes is not None else None,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------- small pieces


def _final_values(
    state: ApprovalState, choice: Choice | None, person: str | None, channel: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "state": state.value,
        "decided_at": now,
        "decided_by": person,
        "decided_choice": choice.value if choice else None,
        "decision_channel": channel,
        "next_due_at": None,
        "updated_at": now,
    }


_MODEL_FIELDS = frozenset(Approval.model_fields)


def _moved(approval: Approval, values: Mapping[str, Any]) -> Approval:
    """The approval as these column values leave it (no validation: the values are ours)."""
    update = {key: value for key, value in values.items() if key in _MODEL_FIELDS}
    if "state" in update:
        update["state"] = ApprovalState(update["state"])
    if update.get("decided_choice") is not None:
        update["decided_choice"] = Choice(update["decided_choice"])
    return approval.model_copy(update=update)


def _choice(intent: Intent) -> Choice:
    raw = intent.choice
    try:
        return Choice(raw or "")
    except ValueError:
        if intent.kind is IntentKind.command:
            message = f"{raw!r} is not a choice: acknowledge, deny or escalate."
        else:
            message = "Not a choice ackbot knows."
        raise _Refusal(_refusal(DecisionReason.wrong_choice, message)) from None


def _nonce(intent: Intent) -> NonceSpend | None:
    claims = intent.claims
    return NonceSpend(claims.nonce, claims.expires_at) if claims is not None else None


def _channel(intent: Intent) -> str:
    return intent.claims.channel if intent.claims is not None else intent.actor.platform


def _details(intent: Intent) -> dict[str, Any]:
    return token_details(intent.claims)


def _result(
    reason: DecisionReason,
    message: str,
    approval: Approval | None,
    choice: Choice | None,
    person: Person | None,
    votes: int = 0,
) -> DecisionResult:
    return DecisionResult(
        ok=reason in TAKEN,
        reason=reason,
        message=message,
        approval=approval,
        choice=choice,
        person=person.name if person else None,
        votes=votes,
        quorum=approval.quorum if approval else 1,
    )


def _refusal(reason: DecisionReason, message: str, approval: Approval | None = None) -> DecisionResult:
    return DecisionResult(
        ok=False, reason=reason, message=message, approval=approval, quorum=approval.quorum if approval else 1
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown time"
