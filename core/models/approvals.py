"""Approvals: the question put to people, its states and choices, and each recorded answer."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from core.models.common import UtcDatetime
from core.models.rules import EscalationStep


class ApprovalState(StrEnum):
    pending = "pending"
    acknowledged = "acknowledged"
    denied = "denied"
    escalated = "escalated"
    expired = "expired"
    cancelled = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (ApprovalState.pending, ApprovalState.escalated)


class Choice(StrEnum):
    acknowledge = "acknowledge"
    deny = "deny"
    escalate = "escalate"


CHOICE_STATE: dict[Choice, ApprovalState] = {
    Choice.acknowledge: ApprovalState.acknowledged,
    Choice.deny: ApprovalState.denied,
    Choice.escalate: ApprovalState.escalated,
}


class Approval(BaseModel):
    """A question put to people, with its state and what it has been answered."""

    id: str
    tenant: str
    title: str
    summary: str = ""
    requester: str | None = None
    approvers: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)
    choices: list[Choice] = Field(default_factory=lambda: list(Choice))
    state: ApprovalState = ApprovalState.pending
    quorum: int = 1
    allow_self_approval: bool = False
    escalation: list[EscalationStep] = Field(default_factory=list)
    escalation_level: int = 0
    callback_url: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    alert_id: str | None = None
    rule: str | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime
    decided_at: UtcDatetime | None = None
    decided_by: str | None = None
    decided_choice: Choice | None = None
    decision_channel: str | None = None


class Decision(BaseModel):
    """One person's answer to an approval, as recorded."""

    approval_id: str
    actor: str
    actor_platform: str
    choice: Choice
    channel: str | None = None
    decided_at: UtcDatetime
