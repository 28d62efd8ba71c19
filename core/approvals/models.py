"""What the approvals API accepts and what a decision answers."""

from __future__ import annotations

import json
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from core.models.approvals import Approval, Choice
from core.models.common import Duration, FreeJson, Strict, UtcDatetime, parse_duration
from core.models.deliveries import HeldUpdate
from core.models.rules import EscalationStep

MAX_CONTEXT_BYTES = 16 * 1024


def bounded_duration(value: Any) -> Any:
    """Refuse, as a validation error, a duration too large for a timedelta (the parser would raise OverflowError)."""
    try:
        parse_duration(value)
    except OverflowError:
        raise ValueError("a duration that large cannot be right") from None
    except ValueError:
        pass  # the field's own validator reports it
    return value


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL characters; refuse them at the edge instead of failing the insert."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class ApprovalRequest(Strict):
    """POST /api/v1/approvals."""

    tenant: str | None = Field(default=None, min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=500)
    summary: str = Field(default="", max_length=20000)
    requester: str | None = Field(default=None, min_length=1, max_length=200)
    approvers: list[str] = Field(
        default_factory=list,
        max_length=100,
        description='person or group names; also accepted as {"people": [...], "groups": [...]}',
    )
    targets: list[str] = Field(min_length=1, max_length=50, description='channel names, or "person:NAME"')
    choices: list[Choice] = Field(default_factory=lambda: list(Choice), min_length=1)
    timeout: Duration = timedelta(hours=1)
    escalation: list[EscalationStep] = Field(default_factory=list, max_length=10)
    quorum: int = Field(default=1, ge=1, le=50)
    allow_self_approval: bool = False
    callback_url: str | None = Field(default=None, max_length=2000)
    context: FreeJson = Field(default_factory=dict)

    @field_validator("approvers", mode="before")
    @classmethod
    def _people_and_groups(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = set(value) - {"people", "groups"}
            if unknown:
                raise ValueError(f"approvers takes people and groups, not {', '.join(sorted(unknown))}")
            people, groups = value.get("people") or [], value.get("groups") or []
            if not isinstance(people, list) or not isinstance(groups, list):
                raise ValueError("approvers.people and approvers.groups must be lists of names")
            return [*people, *groups]
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _bounded_timeout(cls, value: Any) -> Any:
        return bounded_duration(value)

    @field_validator("escalation", mode="before")
    @classmethod
    def _bounded_steps(cls, value: Any) -> Any:
        if isinstance(value, list):
            for step in value:
                if isinstance(step, dict) and "after" in step:
                    bounded_duration(step["after"])
        return value

    @field_validator("title", "summary", "requester", "tenant", "callback_url")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return no_nul(value) if value is not None else None

    @field_validator("approvers", "targets")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for value in values:
            no_nul(value)
        return values

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Choice]) -> list[Choice]:
        if len(set(choices)) != len(choices):
            raise ValueError("each choice may appear once")
        return choices

    @field_validator("timeout")
    @classmethod
    def _sane_timeout(cls, timeout: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= timeout <= timedelta(days=30):
            raise ValueError("timeout must be between 10s and 30d")
        return timeout

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return url

    @field_validator("context")
    @classmethod
    def _small_context(cls, context: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(context, default=str)
        if len(text) > MAX_CONTEXT_BYTES:
            raise ValueError(f"context is larger than {MAX_CONTEXT_BYTES} bytes of JSON")
        if "\\u0000" in text:
            raise ValueError("context must not contain NUL characters")
        return context

    @model_validator(mode="after")
    def _escalation_fits(self) -> ApprovalRequest:
        previous = timedelta(0)
        for step in self.escalation:
            if step.after < previous:
                raise ValueError("escalation steps must be listed in the order they fire (after ascending)")
            if step.after >= self.timeout:
                raise ValueError("every escalation step must fire before the timeout (after < timeout)")
            previous = step.after
        return self


class DecisionReason(StrEnum):
    """Why a decision was taken or refused: stable strings for surfaces, metrics and the audit log."""

    # taken
    decided = "decided"  # this click decided the approval
    vote_recorded = "vote_recorded"  # counted toward the quorum; the approval is still open
    escalated = "escalated"  # moved to the next escalation step
    cancelled = "cancelled"  # the requester withdrew it
    # refused: the token
    malformed = "malformed"
    bad_signature = "bad_signature"
    unknown_key = "unknown_key"
    retired_key = "retired_key"
    expired = "expired"  # the token, or the approval itself, ran out of time
    not_yet_valid = "not_yet_valid"
    wrong_tenant = "wrong_tenant"
    wrong_choice = "wrong_choice"
    wrong_channel = "wrong_channel"  # a chat button clicked on another platform
    replayed = "replayed"  # the token's nonce was spent already
    # refused: the approval
    not_found = "not_found"
    already_decided = "already_decided"
    cannot_escalate = "cannot_escalate"
    # refused: the person
    unknown_actor = "unknown_actor"
    no_subject = "no_subject"  # a web click on a link not issued to a person
    wrong_subject = "wrong_subject"  # a link issued to someone else
    not_approver = "not_approver"
    self_approval = "self_approval"
    already_voted = "already_voted"


_TAKEN = {DecisionReason.decided, DecisionReason.vote_recorded, DecisionReason.escalated, DecisionReason.cancelled}
_STATUS = {
    DecisionReason.malformed: 400,
    DecisionReason.bad_signature: 400,
    DecisionReason.unknown_key: 400,
    DecisionReason.not_yet_valid: 400,
    DecisionReason.wrong_tenant: 400,
    DecisionReason.wrong_choice: 400,
    DecisionReason.wrong_channel: 400,
    DecisionReason.retired_key: 410,
    DecisionReason.expired: 410,
    DecisionReason.replayed: 409,
    DecisionReason.not_found: 404,
    DecisionReason.already_decided: 409,
    DecisionReason.cannot_escalate: 409,
    DecisionReason.already_voted: 409,
    DecisionReason.unknown_actor: 403,
    DecisionReason.no_subject: 403,
    DecisionReason.wrong_subject: 403,
    DecisionReason.not_approver: 403,
    DecisionReason.self_approval: 403,
}


class DecisionResult(BaseModel):
    """What decide() answers every surface: ok, a machine reason, a sentence for people, and the approval."""

    ok: bool
    reason: DecisionReason
    message: str
    approval: Approval | None = None
    choice: Choice | None = None
    person: str | None = Field(default=None, description="the person the click was recorded as")
    votes: int = Field(default=0, description="acknowledge votes so far")
    quorum: int = 1
    # Not part of any answer: the clicked message's update, held for the surface that asked (decide's answering).
    _held_update: HeldUpdate | None = PrivateAttr(default=None)

    @property
    def held_update(self) -> HeldUpdate | None:
        """The update of the clicked message that the decision left to the surface's own answer, if any."""
        return self._held_update

    def holding(self, update: HeldUpdate) -> DecisionResult:
        """This result, holding `update` for the surface."""
        result = self.model_copy()
        result._held_update = update
        return result

    @property
    def http_status(self) -> int:
        """The HTTP status a web surface answers with: 200 when taken, else the 4xx that fits the reason."""
        return 200 if self.reason in _TAKEN else _STATUS.get(self.reason, 400)


class Vote(BaseModel):
    """One acknowledgement toward a quorum."""

    person: str
    choice: Choice
    platform: str
    channel: str | None = None
    at: UtcDatetime


class ApprovalDocument(Approval):
    """An approval as the API answers it: its fields, its votes, and when the scheduler looks at it next."""

    votes: list[Vote] = Field(default_factory=list)
    next_due_at: UtcDatetime | None = Field(default=None, description="the next escalation step or the expiry")


class ApprovalView(BaseModel):
    """An approval with its votes and next due time."""

    approval: Approval
    votes: list[Vote] = Field(default_factory=list)
    next_due_at: UtcDatetime | None = None

    def document(self) -> ApprovalDocument:
        """The API's answer: the approval's fields at top level, plus votes and next_due_at."""
        return ApprovalDocument(**self.approval.model_dump(), votes=self.votes, next_due_at=self.next_due_at)


class ApprovalInputError(ValueError):
    """A request the service refuses, naming the field (targets[1], approvers[0] ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
