"""Opening approvals: over the API (its own transaction, its messages and its audit row), and for a rule's action
(inside the ingest transaction)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.approvals import machine
from core.approvals.directory import Directory
from core.approvals.models import ApprovalInputError, ApprovalRequest
from core.approvals.plans import Policy
from core.approvals.targets import check_names, delivery_key, plan_targets
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, Event
from core.models.rules import Action, Rule
from core.store import approvals as approval_store
from core.store.approvals import approval_from_row
from core.store.db import Database, new_id
from core.store.deliveries import new_delivery
from core.store.tables import ApprovalRow

log = logging.getLogger("ackbot.approvals")


async def create(
    *, db: Database, policy: Policy, request: ApprovalRequest, tenant: str, created_by: str | None, now: datetime
) -> Approval:
    """Open an approval and queue one message per target, in one transaction; ApprovalInputError names a field."""
    check_names(policy.directory, request.approvers, "approvers")
    # Another tenant's channel is not there for this approval: "no channel named", as for an unknown one.
    channel_types = policy.channel_types_for(tenant)
    plans = plan_targets(policy.directory, channel_types, request.targets)
    everyone = list(request.approvers)
    for index, step in enumerate(request.escalation):
        check_names(policy.directory, step.approvers, f"escalation[{index}].approvers")
        plan_targets(policy.directory, channel_types, step.targets, field=f"escalation[{index}].targets")
        everyone += step.approvers
    eligible = policy.directory.eligible_count(everyone) if everyone else len(policy.directory.people)
    if request.quorum > eligible:
        raise ApprovalInputError(
            "quorum", f"{request.quorum} acknowledgements are needed but the approvers name {eligible} people"
        )
    row = _new_row(
        tenant=tenant,
        title=request.title,
        summary=request.summary,
        requester=request.requester,
        approvers=list(request.approvers),
        targets=list(request.targets),
        choices=list(request.choices),
        quorum=request.quorum,
        allow_self_approval=request.allow_self_approval,
        escalation=list(request.escalation),
        timeout=request.timeout,
        callback_url=request.callback_url,
        context=request.context,
        created_by=created_by,
        now=now,
    )
    async with db.transaction() as session:
        await approval_store.add(session=session, row=row)
        for plan in plans:
            session.add(
                new_delivery(
                    tenant=row.tenant,
                    channel=plan.channel,
                    idempotency_key=delivery_key("approval", row.id, "notify", "0", plan.channel, plan.target or ""),
                    now=now,
                    purpose=DeliveryPurpose.notify,
                    approval_id=row.id,
                    target=plan.target,
                    extra={"person": plan.person} if plan.person else None,
                )
            )
        await audit.record(
            session=session,
            db=db,
            type="approval.created",
            at=now,
            tenant=tenant,
            approval_id=row.id,
            actor=created_by,
            actor_platform="api",
            data={
                "targets": list(request.targets),
                "approvers": list(request.approvers),
                "quorum": request.quorum,
                "expires_at": row.expires_at.isoformat(),
            },
        )
    return approval_from_row(row)


async def open_for_action(
    *,
    session: AsyncSession,
    directory: Directory,
    event: Event,
    alert: Alert | None,
    rule: Rule,
    action: Action,
    now: datetime,
) -> str:
    """The ingest hook: open the approval a rule action asks for, inside the ingest transaction.

    Ingest itself queues the action's message with the returned approval id, so the alert carries buttons.
    Its "approval.created" audit row is written after the ingest commits (by the scheduler, or by the first
    decision, whichever is first): the audit lock taken here would be held across the whole batch.
    """
    spec = action.approval
    if spec is None:
        raise ValueError("open_for_action needs an action with approval:")
    approvers = [name for name in spec.approvers if directory.knows(name)]
    for name in set(spec.approvers) - set(approvers):
        log.warning("rule %s: approver %r is neither a person nor a group; ignored", rule.name, name)
    subject = alert or event
    row = _new_row(
        tenant=event.tenant,
        title=subject.title,
        summary=subject.summary,
        requester=None,
        approvers=approvers,
        targets=[action.channel],
        choices=[c for c in Choice if c.value in spec.choices] or list(Choice),
        quorum=min(spec.quorum, max(1, directory.eligible_count(approvers))),
        allow_self_approval=spec.allow_self_approval,
        escalation=sorted((s for s in spec.escalation if s.after < spec.timeout), key=lambda s: s.after),
        timeout=spec.timeout,
        callback_url=None,
        context={
            "event_id": event.id,
            "alert_id": alert.id if alert else None,
            "kind": event.kind,
            "severity": event.severity.value,
            "rule": rule.name,
        },
        created_by=f"rule:{rule.name}",
        alert_id=alert.id if alert else None,
        event_id=event.id,
        rule=rule.name,
        created_audited=False,
        now=now,
    )
    await approval_store.add(session=session, row=row)
    return row.id


def _new_row(
    *, timeout: timedelta, now: datetime, choices: list[Choice], escalation: list[Any], **columns: Any
) -> ApprovalRow:
    expires_at = now + timeout
    return ApprovalRow(
        id=new_id("apr"),
        choices=[c.value for c in choices],
        state=ApprovalState.pending.value,
        escalation=[s.model_dump(mode="json") for s in escalation],
        escalation_level=0,
        created_at=now,
        updated_at=now,
        expires_at=expires_at,
        next_due_at=machine.next_due(created_at=now, expires_at=expires_at, steps=escalation, level=0),
        version=0,
        **columns,
    )
