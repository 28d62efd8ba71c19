"""Grafana unified alerting's webhook payload, translated into events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.models.common import Severity
from core.models.events import EventIn, EventStatus, Link, Scope
from core.sources.common import clip_labels, identity_of, kind_for

_ZERO_TIME_YEAR = 1


class GrafanaAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    values: dict[str, Any] | None = None
    generatorURL: str = ""
    fingerprint: str = Field(default="", max_length=200)
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""
    valueString: str = ""


class GrafanaPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    receiver: str = ""
    status: str = "firing"
    orgId: int | None = None
    # A whole notification in one request, retried on 5xx only: the body limit bounds it, not this.
    alerts: list[GrafanaAlert] = Field(min_length=1, max_length=10_000)
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    version: str = "1"
    groupKey: str = ""
    truncatedAlerts: int = 0
    title: str = ""
    state: str = ""
    message: str = ""


def _links(alert: GrafanaAlert) -> list[Link]:
    candidates = (
        ("Source", alert.generatorURL),
        ("Dashboard", alert.dashboardURL),
        ("Panel", alert.panelURL),
        ("Silence", alert.silenceURL),
        ("Runbook", alert.annotations.get("runbook_url", "")),
    )
    return [Link(title=t, url=u) for t, u in candidates if u.startswith(("http://", "https://"))]


def to_events(payload: GrafanaPayload, *, tenant: str | None) -> list[EventIn]:
    """One event per alert, identified by Grafana's fingerprint."""
    events = []
    for alert in payload.alerts:
        labels = alert.labels
        name = labels.get("alertname", "alert")
        title = alert.annotations.get("summary") or name
        summary = alert.annotations.get("description") or alert.valueString or ""
        identity = identity_of(alert.fingerprint, labels)
        resolved = alert.status == "resolved"
        ends = alert.endsAt if alert.endsAt and alert.endsAt.year > _ZERO_TIME_YEAR else None
        events.append(
            EventIn(
                kind=kind_for("grafana", name),
                tenant=tenant,
                ts=ends if resolved and ends else alert.startsAt,
                severity=Severity.parse_loose(labels.get("severity")),
                status=EventStatus.resolved if resolved else EventStatus.firing,
                title=title[:500],
                summary=summary[:20000],
                scope=Scope(
                    namespace=labels.get("namespace", labels.get("grafana_folder", ""))[:256],
                    labels=clip_labels(labels),
                ),
                payload={
                    "source": "grafana",
                    "receiver": payload.receiver,
                    "org_id": payload.orgId,
                    "annotations": alert.annotations,
                    "values": alert.values,
                    "fingerprint": alert.fingerprint,
                },
                dedup_key=f"grafana:{identity}"[:500],
                links=_links(alert)[:20],
            )
        )
    return events
