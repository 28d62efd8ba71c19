"""Operations every surface offers the same way (HTTP API, CLI, Slack and Teams commands)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from core.channels.base import ChannelError, SendResult
from core.models import DeliveryPurpose
from core.runtime import Runtime
from core.store import channels as channel_store
from core.store.db import new_id
from core.store.deliveries import new_delivery


@dataclass(frozen=True)
class TestOutcome:
    """What a test notification did: delivered, or the receiver's error."""

    channel: str
    delivery_id: str
    ok: bool
    status_code: int | None
    error: str | None
    message_ref: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "channel": self.channel,
            "delivery_id": self.delivery_id,
            "ok": self.ok,
            "status_code": self.status_code,
            "error": self.error,
            "message_ref": self.message_ref,
        }


class UnknownChannel(Exception):
    """No channel of that name is in service."""


async def send_test(*, runtime: Runtime, channel: str, tenant: str = "default", requested_by: str = "") -> TestOutcome:
    """Send a real test notification through a channel now and report what the receiver said."""
    if channel not in runtime.channels:
        raise UnknownChannel(channel)
    if runtime.dispatcher is None:
        raise RuntimeError("the runtime is not started")
    now = runtime.clock.now()
    key = hashlib.sha256(new_id("test").encode()).hexdigest()[:48]
    row = new_delivery(
        tenant=tenant,
        channel=channel,
        idempotency_key=key,
        now=now,
        purpose=DeliveryPurpose.test,
        extra={
            "title": f"ackbot test notification for channel {channel}",
            "summary": "If you can read this, the channel works."
            + (f" Sent by {requested_by}." if requested_by else ""),
        },
    )
    async with runtime.db.transaction() as session:
        session.add(row)
    outcome = await runtime.dispatcher.deliver_now(delivery_id=row.id)
    if isinstance(outcome, SendResult):
        return TestOutcome(channel, row.id, True, outcome.status_code, None, outcome.message_ref)
    assert isinstance(outcome, ChannelError)
    return TestOutcome(channel, row.id, False, outcome.status_code, str(outcome), None)


async def channel_health(*, runtime: Runtime, channel: str) -> channel_store.ChannelHealth:
    """Health figures of one channel, from the deliveries every replica shares."""
    if channel not in runtime.channels and channel not in runtime.channel_configs:
        raise UnknownChannel(channel)
    async with runtime.db.sessions() as session:
        return await channel_store.health(session=session, channel=channel)


async def all_channel_health(*, runtime: Runtime) -> list[channel_store.ChannelHealth]:
    """Health of every channel in service, by name."""
    return [await channel_health(runtime=runtime, channel=name) for name in sorted(runtime.channels)]
