"""PagerDuty through the Events API v2: trigger, acknowledge and resolve one PagerDuty alert per ackbot alert.

``POST {base_url}/v2/enqueue``. The ``dedup_key`` is the ackbot alert's fingerprint, so every event about an
alert lands on the same PagerDuty alert, retries included: PagerDuty itself is the idempotency layer. 202 is
success; 400 is a malformed event (permanent); 429 and 5xx are worth retrying, honouring Retry-After.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from core.channels.base import HttpChannel, HttpChannelSettings, Notification, SendResult, json_bytes
from core.channels.errors import PermanentChannelError
from core.models.approvals import ApprovalState
from core.models.common import Severity
from core.models.events import AlertStatus, EventStatus
from core.secrets import SecretRef

EventAction = Literal["trigger", "acknowledge", "resolve"]

# PD-CEF knows four severities; ackbot's five fold onto them.
SEVERITY_MAP: dict[Severity, str] = {
    Severity.critical: "critical",
    Severity.high: "error",
    Severity.medium: "warning",
    Severity.low: "info",
    Severity.info: "info",
}


class PagerDutySettings(HttpChannelSettings):
    """The integration's routing key and how events describe their source."""

    routing_key: SecretRef = Field(description="the Events API v2 integration key")
    base_url: str = Field(default="https://events.pagerduty.com", description="e.g. https://events.eu.pagerduty.com")
    source: str | None = Field(
        default=None, max_length=255, description="payload.source; default: the scope's repo, namespace or 'ackbot'"
    )
    component: str | None = Field(default=None, max_length=255)
    group: str | None = Field(default=None, max_length=255)
    client: str = Field(default="ackbot", max_length=255, description="shown in PagerDuty as the sending tool")

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with https:// (or http://)")
        return url.rstrip("/")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PagerDutyChannel(HttpChannel):
    """Events API v2: trigger when firing, acknowledge when acknowledged in ackbot, resolve when resolved."""

    type: ClassVar[str] = "pagerduty"
    Settings = PagerDutySettings
    settings: PagerDutySettings
    supports_update: ClassVar[bool] = True
    # PagerDuty asks for retries on 429 and 5xx. A page is what must not be lost: retried for six hours (events are
    # deduplicated by dedup_key, so a late trigger after a resolve changes nothing wrongly), no count of tries;
    # 2 s doubling to 2 minutes between them, soon enough that a page is not much later than PagerDuty's return.
    RETRY_FOR: ClassVar[timedelta] = timedelta(hours=6)
    MAX_ATTEMPTS: ClassVar[int | None] = None
    BACKOFF_BASE: ClassVar[float] = 2.0
    BACKOFF_MAX: ClassVar[float] = 120.0
    # About 120 events a minute per integration key.
    RATE_PER_SECOND: ClassVar[float] = 2.0
    # Limits of the Events API v2.
    MAX_SUMMARY = 1024
    MAX_DEDUP_KEY = 255
    MAX_FIELD = 255
    MAX_BODY_BYTES = 512 * 1024

    @staticmethod
    def event_action(note: Notification) -> EventAction:
        """What the notification means to PagerDuty, from the alert's status, else the approval's, else the event's."""
        approval_state = note.approval.state if note.approval is not None else None
        if note.alert is not None:
            if note.alert.status is AlertStatus.resolved:
                return "resolve"
            if note.alert.status is AlertStatus.acknowledged or approval_state is ApprovalState.acknowledged:
                return "acknowledge"
            # A denied approval leaves the alert's problem as it was: still open, still paging.
            return "trigger"
        if approval_state is not None:
            if approval_state is ApprovalState.acknowledged:
                return "acknowledge"
            # Denied, expired or cancelled: the question is closed, nobody needs paging about it any more.
            return "resolve" if approval_state.final else "trigger"
        if note.event is not None and note.event.status is EventStatus.resolved:
            return "resolve"
        return "trigger"

    def dedup_key(self, note: Notification) -> str:
        """The alert's fingerprint (else the event's dedup key or id, else the approval id), at most 255 characters."""
        if note.alert is not None:
            key = note.alert.fingerprint or note.alert.id
        elif note.event is not None:
            key = note.event.dedup_key or note.event.id
        elif note.approval is not None:
            key = f"approval:{note.approval.id}"
        else:
            key = note.idempotency_key
        if len(key) > self.MAX_DEDUP_KEY:
            key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
        return key

    def build_event(self, note: Notification, routing_key: str, *, dedup_key: str | None = None) -> dict[str, Any]:
        """The Events API v2 document for a notification."""
        action = self.event_action(note)
        event: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": action,
            "dedup_key": dedup_key or self.dedup_key(note),
        }
        if action != "trigger":
            # Acknowledge and resolve need only the key; PagerDuty ignores a payload on them.
            return event
        subject = note.alert or note.event
        scope = subject.scope if subject is not None else None
        source = self.settings.source or (scope.repo or scope.namespace if scope else "") or "ackbot"
        payload: dict[str, Any] = {
            "summary": _clip(note.title, self.MAX_SUMMARY),
            "source": _clip(source, self.MAX_FIELD),
            "severity": SEVERITY_MAP[note.severity or Severity.info],
        }
        if note.alert is not None:
            payload["timestamp"] = note.alert.last_seen.isoformat()
        elif note.event is not None:
            payload["timestamp"] = note.event.ts.isoformat()
        if self.settings.component:
            payload["component"] = self.settings.component
        if self.settings.group or (scope and scope.namespace):
            payload["group"] = _clip(self.settings.group or (scope.namespace if scope else ""), self.MAX_FIELD)
        if subject is not None:
            payload["class"] = _clip(subject.kind, self.MAX_FIELD)
        details: dict[str, Any] = {"tenant": note.tenant}
        if note.summary:
            details["summary"] = note.summary
        if scope is not None:
            details.update(
                {k: v for k, v in (("namespace", scope.namespace), ("repo", scope.repo), ("digest", scope.digest)) if v}
            )
            if scope.labels:
                details["labels"] = dict(scope.labels)
        if note.alert is not None:
            details["alert_id"] = note.alert.id
            details["event_count"] = note.alert.event_count
        if note.approval is not None:
            details["approval_id"] = note.approval.id
            if note.approval.approvers:
                details["approvers"] = list(note.approval.approvers)
        if note.suppressed_count:
            details["suppressed_count"] = note.suppressed_count
        payload["custom_details"] = details
        event["payload"] = payload
        event["client"] = self.settings.client
        if note.public_url:
            event["client_url"] = note.public_url
        links = [{"href": url, "text": title} for title, url in note.links]
        links.extend({"href": b.url, "text": f"{b.label or b.choice} in ackbot"} for b in note.buttons)
        if links:
            event["links"] = links
        return event

    def describe_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> str:
        """PagerDuty answers {"status", "message", "errors": [...]}: quote the message and the errors."""
        try:
            document = json.loads(body)
        except ValueError:
            return super().describe_error(status, body, headers)
        if not isinstance(document, dict):
            return super().describe_error(status, body, headers)
        parts = [str(document.get("message") or document.get("status") or "")]
        errors = document.get("errors")
        if isinstance(errors, list):
            parts.extend(str(e) for e in errors[:5])
        return "; ".join(p for p in parts if p)[: self.MAX_ERROR_DETAIL]

    async def _enqueue(self, note: Notification, dedup_key: str | None) -> SendResult:
        routing_key = self.resolve_secret(self.settings.routing_key)
        event = self.build_event(note, routing_key, dedup_key=dedup_key)
        body = json_bytes(event)
        if len(body) > self.MAX_BODY_BYTES:
            raise PermanentChannelError(f"pagerduty channel {self.name!r}: the event is over 512 KB")
        response = await self.request("POST", f"{self.settings.base_url}/v2/enqueue", body=body)
        answer = response.json()
        dedup_key = answer.get("dedup_key") if isinstance(answer, dict) else None
        return SendResult(
            message_ref={"dedup_key": dedup_key or event["dedup_key"]},
            status_code=response.status,
            detail={"event_action": event["event_action"]},
        )

    async def send(self, note: Notification) -> SendResult:
        """Enqueue the event its status calls for (usually a trigger)."""
        return await self._enqueue(note, None)

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Acknowledge or resolve (or re-trigger) the PagerDuty alert as ackbot's state now says."""
        previous = message_ref.get("dedup_key")
        return await self._enqueue(note, str(previous) if previous else None)
