"""Rows to domain models and back: the one place that knows both shapes."""

from __future__ import annotations

from typing import Any

from core.models.deliveries import Delivery, DeliveryAttempt
from core.models.events import Alert, Event
from core.store.tables import AlertRow, DeliveryAttemptRow, DeliveryRow, EventRow


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def event_from_row(row: EventRow) -> Event:
    """The stored event as a domain model."""
    return event_from_columns(_columns(row))


def event_from_columns(columns: dict[str, Any]) -> Event:
    """An event's columns (as read with Core) as a domain model."""
    return Event.model_validate(columns)


def alert_from_row(row: AlertRow) -> Alert:
    """The stored alert as a domain model."""
    return alert_from_columns(_columns(row))


def alert_from_columns(columns: dict[str, Any]) -> Alert:
    """An alert's columns (as read with Core, or about to be written) as a domain model."""
    data = dict(columns)
    data.pop("severity_rank", None)
    return Alert.model_validate(data)


def delivery_from_row(row: DeliveryRow) -> Delivery:
    """The stored delivery as a domain model (leases and bookkeeping columns left out)."""
    data = _columns(row)
    for internal in ("lease_until", "claimed_by", "suppressed_count", "extra", "counted_failures"):
        data.pop(internal)
    return Delivery.model_validate(data)


def attempt_from_row(row: DeliveryAttemptRow) -> DeliveryAttempt:
    """One recorded attempt as a domain model."""
    data = _columns(row)
    data.pop("id")
    return DeliveryAttempt.model_validate(data)
