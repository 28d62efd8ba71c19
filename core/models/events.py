"""Events as clients send them and ackbot stores them, and the alerts they open, update and resolve."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from core.models.common import FreeJson, Severity, Strict, UtcDatetime


class Link(Strict):
    title: str = Field(default="", max_length=200)
    url: str = Field(max_length=2000)

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("links must be http(s) URLs")
        return url


class Scope(Strict):
    namespace: str = Field(default="", max_length=256)
    repo: str = Field(default="", max_length=512)
    digest: str = Field(default="", max_length=256)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _label_sizes(cls, labels: dict[str, str]) -> dict[str, str]:
        if len(labels) > 100:
            raise ValueError("at most 100 labels")
        for key, value in labels.items():
            if len(key) > 128 or len(value) > 1024:
                raise ValueError(f"label {key[:40]!r} is too long (name 128, value 1024 characters)")
        return labels


class EventStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"


class EventIn(Strict):
    """An event as a client sends it to POST /api/v1/events."""

    id: str | None = Field(default=None, min_length=1, max_length=200, description="client idempotency key")
    kind: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/-]+$")
    tenant: str | None = Field(default=None, min_length=1, max_length=100)
    ts: UtcDatetime | None = None
    severity: Severity = Severity.info
    status: EventStatus = EventStatus.firing
    title: str = Field(min_length=1, max_length=500)
    summary: str = Field(default="", max_length=20000)
    scope: Scope = Field(default_factory=Scope)
    payload: FreeJson = Field(default_factory=dict)
    dedup_key: str | None = Field(default=None, min_length=1, max_length=500)
    links: list[Link] = Field(default_factory=list, max_length=20)


class Event(BaseModel):
    """An event as ackbot stored it."""

    id: str
    client_id: str | None = None
    kind: str
    tenant: str
    ts: UtcDatetime
    received_at: UtcDatetime
    severity: Severity
    status: EventStatus = EventStatus.firing
    title: str
    summary: str = ""
    scope: Scope = Field(default_factory=Scope)
    payload: dict[str, Any] = Field(default_factory=dict)
    dedup_key: str | None = None
    links: list[Link] = Field(default_factory=list)
    alert_id: str | None = None
    source: str = "api"


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Alert(BaseModel):
    """The lasting thing that one or more events about the same subject open, update and resolve."""

    id: str
    tenant: str
    fingerprint: str
    kind: str
    status: AlertStatus
    severity: Severity
    title: str
    summary: str = ""
    scope: Scope = Field(default_factory=Scope)
    payload: dict[str, Any] = Field(default_factory=dict)
    links: list[Link] = Field(default_factory=list)
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    resolved_at: UtcDatetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: UtcDatetime | None = None
    event_count: int = 1
    last_event_id: str | None = None
