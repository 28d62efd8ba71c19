"""The delivery ledger for the surfaces: reading deliveries and their attempts, and retrying one by hand.

Each call opens its own session; the dispatcher (core.dispatch) is what sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.models.deliveries import Delivery, DeliveryAttempt, DeliveryStatus
from core.store import deliveries as delivery_store
from core.store.db import Database
from core.store.tables import DeliveryRow


async def list_deliveries(
    *,
    db: Database,
    tenants: list[str] | None,
    status: DeliveryStatus | None = None,
    channel: str | None = None,
    event_id: str | None = None,
    alert_id: str | None = None,
    approval_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Delivery], str | None]:
    """Deliveries newest first, filtered; the page and the last id when there is more (ValueError: a bad cursor)."""
    async with db.read() as session:
        return await delivery_store.list_deliveries(
            session=session,
            tenants=tenants,
            status=status,
            channel=channel,
            event_id=event_id,
            alert_id=alert_id,
            approval_id=approval_id,
            limit=limit,
            cursor=cursor,
        )


async def get_delivery(*, db: Database, delivery_id: str) -> Delivery | None:
    """One delivery by id."""
    async with db.read() as session:
        return await delivery_store.get(session=session, delivery_id=delivery_id)


async def with_attempts(*, db: Database, delivery_id: str) -> tuple[Delivery, list[DeliveryAttempt]] | None:
    """A delivery and every attempt at it, oldest first; None if there is no such delivery."""
    async with db.read() as session:
        delivery = await delivery_store.get(session=session, delivery_id=delivery_id)
        if delivery is None:
            return None
        return delivery, await delivery_store.attempts(session=session, delivery_id=delivery_id)


@dataclass(frozen=True)
class Retry:
    """What a retry by hand found: the delivery as it was (None: no such delivery), and whether it is queued again."""

    found: Delivery | None
    queued: bool


async def retry_dead(
    *, db: Database, delivery_id: str, now: datetime, check: Callable[[Delivery], None] = lambda _delivery: None
) -> Retry:
    """Queue a dead or failing delivery again, now, in one transaction; check may raise to refuse it first."""
    async with db.transaction() as session:
        delivery = await delivery_store.get(session=session, delivery_id=delivery_id)
        if delivery is None:
            return Retry(None, False)
        check(delivery)
        return Retry(delivery, await delivery_store.retry_dead(session=session, delivery_id=delivery_id, now=now))


async def latest_sent_notification(
    *,
    db: Database,
    channels: Sequence[str],
    approval_id: str | None,
    alert_id: str | None,
    conversation_id: str | None = None,
) -> DeliveryRow | None:
    """The latest sent notify delivery on these channels about the approval (else the alert), preferring the one
    whose message is in conversation_id (message_ref["conversation_id"]); None when there is none."""
    if not channels or not (approval_id or alert_id):
        return None
    async with db.read() as session:
        candidates = await delivery_store.latest_sent_notifies(
            session=session, channels=channels, approval_id=approval_id, alert_id=alert_id
        )
    if conversation_id:
        for row in candidates:
            if (row.message_ref or {}).get("conversation_id") == conversation_id:
                return row
    return candidates[0] if candidates else None
