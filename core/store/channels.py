"""Channels created through the API, and the health figures every channel's deliveries add up to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import ChannelConfig
from core.models.deliveries import DeliveryStatus
from core.store.tables import ChannelRow, DeliveryAttemptRow, DeliveryRow


def _config(row: ChannelRow) -> ChannelConfig:
    return ChannelConfig(name=row.name, type=row.type, tenant=row.tenant, enabled=row.enabled, settings=row.settings)


async def list_channels(*, session: AsyncSession) -> list[ChannelConfig]:
    """Every API channel, by name."""
    rows = await session.execute(select(ChannelRow).order_by(ChannelRow.name))
    return [_config(row) for row in rows.scalars()]


async def version(*, session: AsyncSession) -> tuple[int, str]:
    """A stamp that changes whenever an API channel is added, changed or deleted."""
    count, newest = (await session.execute(select(func.count(), func.max(ChannelRow.updated_at)))).one()
    return int(count), str(newest)


async def put(*, session: AsyncSession, channel: ChannelConfig, now: datetime) -> bool:
    """Create or replace an API channel; True if created."""
    row = await session.get(ChannelRow, channel.name)
    if row is None:
        session.add(
            ChannelRow(
                name=channel.name,
                type=channel.type,
                tenant=channel.tenant,
                enabled=channel.enabled,
                settings=channel.settings,
                created_at=now,
                updated_at=now,
            )
        )
        return True
    row.type = channel.type
    row.tenant = channel.tenant
    row.enabled = channel.enabled
    row.settings = channel.settings
    row.updated_at = now
    return False


async def remove(*, session: AsyncSession, name: str) -> bool:
    """Delete an API channel; False if there was none."""
    result = await session.execute(delete(ChannelRow).where(ChannelRow.name == name))
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True)
class ChannelHealth:
    channel: str
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None
    consecutive_failures: int
    dead: int
    pending: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "channel": self.channel,
            "healthy": self.consecutive_failures == 0,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_failure": self.last_failure.isoformat() if self.last_failure else None,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "dead": self.dead,
            "pending": self.pending,
        }


async def health(*, session: AsyncSession, channel: str) -> ChannelHealth:
    """Last success, last failure, failures since the last success, dead and waiting deliveries of a channel."""
    attempts = (
        select(DeliveryAttemptRow.finished_at, DeliveryAttemptRow.outcome, DeliveryAttemptRow.error)
        .join(DeliveryRow, DeliveryRow.id == DeliveryAttemptRow.delivery_id)
        .where(DeliveryRow.channel == channel)
    )
    last_success = (
        await session.execute(
            select(func.max(DeliveryAttemptRow.finished_at))
            .join(DeliveryRow, DeliveryRow.id == DeliveryAttemptRow.delivery_id)
            .where(DeliveryRow.channel == channel, DeliveryAttemptRow.outcome == "sent")
        )
    ).scalar_one_or_none()
    failures = attempts.where(DeliveryAttemptRow.outcome != "sent")
    if last_success is not None:
        failures = failures.where(DeliveryAttemptRow.finished_at > last_success)
    recent = (await session.execute(failures.order_by(DeliveryAttemptRow.finished_at.desc()).limit(1000))).all()
    counts = dict(
        (
            await session.execute(
                select(DeliveryRow.status, func.count())
                .where(DeliveryRow.channel == channel)
                .group_by(DeliveryRow.status)
            )
        ).all()
    )
    last_failure: datetime | None
    last_error: str | None
    if recent:
        last_failure, last_error = recent[0][0], recent[0][2]
    else:
        failure_row = (
            await session.execute(
                attempts.where(DeliveryAttemptRow.outcome != "sent")
                .order_by(DeliveryAttemptRow.finished_at.desc())
                .limit(1)
            )
        ).first()
        last_failure, last_error = (failure_row[0], failure_row[2]) if failure_row else (None, None)
    return ChannelHealth(
        channel=channel,
        last_success=last_success,
        last_failure=last_failure,
        last_error=last_error,
        consecutive_failures=len(recent),
        dead=int(counts.get(DeliveryStatus.dead, 0)),
        pending=int(counts.get(DeliveryStatus.pending, 0) + counts.get(DeliveryStatus.failed, 0)),
    )
