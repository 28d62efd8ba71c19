"""Operations every surface offers the same way (HTTP API, CLI, Slack and Teams commands)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core import silences
from core.channels.base import SendResult
from core.channels.errors import ChannelError
from core.config import ChannelConfig
from core.models.common import parse_duration
from core.models.deliveries import DeliveryPurpose
from core.models.people import ALL_TENANTS, Actor, Person
from core.runtime import Runtime
from core.store import alerts as alert_store
from core.store import channels as channel_store
from core.store.db import Database, new_id
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
    runtime.dispatcher.claim_for_now(row)
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
    async with runtime.db.read() as session:
        return await channel_store.health(session=session, channel=channel)


async def all_channel_health(*, runtime: Runtime) -> list[channel_store.ChannelHealth]:
    """Health of every channel in service, by name."""
    return [await channel_health(runtime=runtime, channel=name) for name in sorted(runtime.channels)]


async def put_channel(*, db: Database, channel: ChannelConfig, now: datetime) -> bool:
    """Store an API channel, new or changed, in a transaction of its own; True if it is new (every replica puts it
    in service when it next refreshes its channels)."""
    async with db.transaction() as session:
        return await channel_store.put(session=session, channel=channel, now=now)


async def remove_channel(*, db: Database, name: str) -> bool:
    """Delete a stored API channel; False if there was none."""
    async with db.transaction() as session:
        return await channel_store.remove(session=session, name=name)


class NotAllowed(Exception):
    """The actor may not do this (not a known person, or not among those the config allows)."""


class UnknownAlert(Exception):
    """No alert with that id."""


def person_of(runtime: Runtime, actor: Actor) -> Person | None:
    """The configured person behind a platform identity, or None."""
    # The approvals' directory knows every platform identity; without it, match the config's people directly.
    directory: Any = getattr(getattr(runtime, "approvals", None), "directory", None)
    if directory is not None:
        person: Person | None = directory.resolve(actor)
        return person
    for candidate in runtime.config.people:
        ids = candidate.identities
        if actor.platform == "slack" and ids.slack == actor.id:
            return candidate
        if actor.platform == "teams" and ids.teams and ids.teams.lower() == actor.id.lower():
            return candidate
        if actor.platform in ("web", "api") and actor.id in (candidate.name, ids.email):
            return candidate
    return None


@dataclass(frozen=True)
class TenantScope:
    """The tenants someone sees in chat (every tenant, or those named, possibly none) and the setting that says so."""

    names: frozenset[str]
    everything: bool
    source: str

    @classmethod
    def of(cls, tenants: Iterable[str], *, source: str) -> TenantScope:
        """A scope from a config list, where "*" stands for every tenant."""
        names = frozenset(tenants)
        return cls(names=names - {ALL_TENANTS}, everything=ALL_TENANTS in names, source=source)

    def allows(self, tenant: str) -> bool:
        """Whether this tenant's alerts and approvals may be shown."""
        return self.everything or tenant in self.names

    @property
    def empty(self) -> bool:
        """Whether no tenant at all may be shown."""
        return not self.everything and not self.names

    @property
    def tenants(self) -> list[str] | None:
        """For a store query: None for every tenant, else the names in order."""
        return None if self.everything else sorted(self.names)

    def describe(self) -> str:
        """The tenants in words, for a refusal."""
        if self.everything:
            return "every tenant"
        return ", ".join(sorted(self.names)) or "no tenant"


def chat_scope(*, runtime: Runtime, actor: Actor) -> TenantScope:
    """The tenants a chat user sees: their person's `tenants`, else their platform's `unknown_user_tenants`."""
    person = person_of(runtime, actor)
    if person is not None:
        return TenantScope.of(person.tenants, source=f"person {person.name}'s tenants in the config")
    if actor.platform == "slack":
        return TenantScope.of(
            runtime.config.slack.unknown_user_tenants,
            source="slack.unknown_user_tenants: you are not among ackbot's people",
        )
    if actor.platform == "teams":
        return TenantScope.of(
            runtime.config.teams.unknown_user_tenants,
            source="teams.unknown_user_tenants: you are not among ackbot's people",
        )
    # The web page and the API authenticate otherwise (ack tokens, API keys); here only configured people see.
    return TenantScope.of((), source="people")


def _may_silence(runtime: Runtime, person: Person) -> bool:
    allowed = runtime.config.noise.silence_approvers
    if not allowed:
        return True
    directory: Any = getattr(getattr(runtime, "approvals", None), "directory", None)
    if directory is not None:
        return bool(directory.may_decide(person, allowed))
    groups = {g.name: g.members for g in runtime.config.groups}
    seen: set[str] = set()
    stack = list(allowed)
    while stack:
        name = stack.pop()
        if name == person.name:
            return True
        if name in groups and name not in seen:
            seen.add(name)
            stack.extend(groups[name])
    return False


async def silence(
    *, runtime: Runtime, alert_id: str, duration: str | timedelta, actor: Actor, comment: str = ""
) -> silences.Silence:
    """Silence an alert (its identity, so a re-fire stays quiet) for a duration; chat's `silence <alert> <for>`.

    Raises SilenceError (bad duration), NotAllowed (the actor is no known person, not in noise.silence_approvers, or
    does not see the alert's tenant) and UnknownAlert.
    """
    try:
        span = parse_duration(duration)
    except ValueError:
        raise silences.SilenceError("duration", "a duration such as 30m, 2h or 1d") from None
    if span <= timedelta(0):
        raise silences.SilenceError("duration", "the duration must be positive")
    person = person_of(runtime, actor)
    if person is None:
        raise NotAllowed(f"{actor.platform} user {actor.id} is not a configured person")
    if not _may_silence(runtime, person):
        raise NotAllowed(f"{person.name} may not silence alerts (see noise.silence_approvers)")
    async with runtime.db.transaction() as session:
        alert = await alert_store.get(session=session, alert_id=alert_id)
        if alert is None:
            raise UnknownAlert(alert_id)
        if not TenantScope.of(person.tenants, source="").allows(alert.tenant):
            raise NotAllowed(f"{person.name} does not see tenant {alert.tenant!r}")
        spec = silences.SilenceIn(
            duration=span,
            created_by=person.name,
            comment=comment or f"silenced from {actor.platform} by {actor.display_name or person.name}",
            alert_id=alert.id,
        )
        return await silences.create(
            session=session, db=runtime.db, spec=spec, tenant=alert.tenant, now=runtime.clock.now()
        )
