"""Deliveries, the outbox rows every message goes out through, and their attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.models.common import UtcDatetime


class DeliveryStatus(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"  # failed an attempt, another one is scheduled
    dead = "dead"
    cancelled = "cancelled"


class DeliveryPurpose(StrEnum):
    notify = "notify"  # first message about an alert or approval
    update = "update"  # edit an earlier message (decision, resolve)
    callback = "callback"  # signed webhook to an approval's requester
    test = "test"
    digest = "digest"  # a coalesced window of alerts (content in Delivery.extra["digest"])
    report = "report"  # the scheduled report (content in Delivery.extra["report"])


class Delivery(BaseModel):
    id: str
    tenant: str
    event_id: str | None = None
    alert_id: str | None = None
    approval_id: str | None = None
    rule: str | None = None
    action_index: int | None = None
    channel: str
    purpose: DeliveryPurpose = DeliveryPurpose.notify
    idempotency_key: str
    status: DeliveryStatus
    attempts: int = 0
    failing_since: UtcDatetime | None = Field(
        default=None,
        description="when its current run of failed attempts began (null unless it is failing, or died failing); "
        "it is retried until it has been failing for its channel's retry_for",
    )
    next_attempt_at: UtcDatetime
    last_error: str | None = None
    message_ref: dict[str, Any] | None = None
    target: str | None = Field(default=None, description="a person or conversation within the channel")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    sent_at: UtcDatetime | None = None


class DeliveryAttempt(BaseModel):
    delivery_id: str
    number: int
    started_at: UtcDatetime
    finished_at: UtcDatetime
    outcome: Literal["sent", "retry", "permanent"]
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class HeldUpdate:
    """The update of a clicked message, queued already claimed by this process's outbox worker for the click's own
    answer to make (Slack's response_url replaces the clicked message): the surface settles it as sent once the
    platform took that answer, or hands it back to the outbox; if the process dies first, the claim's lease runs
    out and the outbox edits the message then."""

    delivery_id: str
    channel: str
    message_ref: dict[str, Any]
    created_at: datetime
