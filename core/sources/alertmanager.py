"""Prometheus Alertmanager's webhook payload (version 4), translated into events."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.models.common import Severity
from core.models.events import EventIn, EventStatus, Link, Scope
from core.sources.common import clip_labels, identity_of, kind_for

# Alertmanager sends "0001-01-01T00:00:00Z" as endsAt of a firing alert.
_ZERO_TIME_YEAR = 1


class AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(default="", max_length=200)


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"] = "firing"
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    # Alertmanager sends a whole group in one request and treats a 4xx as final: the body limit bounds it, not this.
    alerts: list[AmAlert] = Field(min_length=1, max_length=10_000)


def _link(title: str, url: str) -> list[Link]:
    return [Link(title=title, url=url)] if url.startswith(("http://", "https://")) else []


def to_events(payload: AlertmanagerPayload, *, tenant: str | None) -> list[EventIn]:
    """One event per alert; the fingerprint is the alert's identity, so a resolve closes what firing opened."""
    events = []
    for alert in payload.alerts:
        labels = alert.labels
        name = labels.get("alertname", "alert")
        annotations = alert.annotations
        title = annotations.get("summary") or annotations.get("title") or name
        summary = annotations.get("description") or annotations.get("message") or ""
        identity = identity_of(alert.fingerprint, labels)
        ends = alert.endsAt if alert.endsAt and alert.endsAt.year > _ZERO_TIME_YEAR else None
        links = _link("Source", alert.generatorURL) + _link("Alertmanager", payload.externalURL)
        if annotations.get("runbook_url"):
            links += _link("Runbook", annotations["runbook_url"])
        events.append(
            EventIn(
                kind=kind_for("alertmanager", name),
                tenant=tenant,
                ts=(ends if alert.status == "resolved" and ends else alert.startsAt),
                severity=Severity.parse_loose(labels.get("severity")),
                status=EventStatus(alert.status),
                title=title[:500],
                summary=summary[:20000],
                scope=Scope(
                    namespace=labels.get("namespace", "")[:256],
                    repo=labels.get("job", "")[:512],
                    labels=clip_labels(labels),
                ),
                payload={
                    "source": "alertmanager",
                    "receiver": payload.receiver,
                    "group_key": payload.groupKey,
                    "annotations": annotations,
                    "starts_at": alert.startsAt.isoformat() if alert.startsAt else None,
                    "ends_at": ends.isoformat() if ends else None,
                    "fingerprint": alert.fingerprint,
                },
                dedup_key=f"am:{identity}"[:500],
                links=links[:20],
            )
        )
    return events
