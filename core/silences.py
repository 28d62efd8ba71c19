"""Silences and maintenance windows: events they match are recorded (event and alert) but notify nobody.

A silence's matchers are a rule's `match` (core.models.Match) and are evaluated by the rules engine
(core.rules.RuleSet), so silences and rules speak one matcher language with one implementation. A silence is in
force from starts_at until ends_at; deleting one ends it now and keeps it for the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from core.models.common import Duration, Strict, UtcDatetime
from core.models.events import Alert, Event
from core.models.rules import Condition, ConditionOp, Match, Rule
from core.rules import RuleSet
from core.store import alerts as alert_store
from core.store import silences as silence_store
from core.store.db import Database, new_id
from core.store.tables import SilenceRow

# The longest silence: a forgotten one must not hide an outage for years.
MAX_SILENCE = timedelta(days=366)
# Compiled rule sets of recent combinations of active silences (they change rarely; events come often).
_CACHE_SIZE = 64

SilenceState = Literal["pending", "active", "expired"]


class SilenceIn(Strict):
    """A silence as the API receives it: matchers, and when it starts and ends (or for how long)."""

    matchers: Match = Field(default_factory=Match, description="a rule's match: kinds, namespaces, labels, where ...")
    tenant: str | None = Field(default=None, min_length=1, max_length=100, description='a tenant, or "*"')
    starts_at: UtcDatetime | None = Field(default=None, description="default: now")
    ends_at: UtcDatetime | None = None
    duration: Duration | None = Field(
        default=None, validate_default=True, description="instead of ends_at: 30m, 2h, 1d"
    )
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)
    alert_id: str | None = Field(
        default=None, max_length=40, description="silence this alert's identity (instead of matchers)"
    )

    @field_validator("duration")
    @classmethod
    def _one_end(cls, duration: timedelta | None, info: ValidationInfo) -> timedelta | None:
        # ends_at is validated first (field order), so both are known here and the error names this field.
        ends_at = info.data.get("ends_at")
        if duration is None and ends_at is None:
            raise ValueError("give duration (e.g. 2h) or ends_at")
        if duration is not None and ends_at is not None:
            raise ValueError("give duration or ends_at, not both")
        if duration is not None and duration <= timedelta(0):
            raise ValueError("duration must be positive")
        return duration

    @model_validator(mode="after")
    def _one_subject(self) -> SilenceIn:
        if self.alert_id is not None and "matchers" in self.model_fields_set:
            raise ValueError("give matchers or alert_id, not both")
        return self

    def span(self, now: datetime) -> tuple[datetime, datetime]:
        """(starts_at, ends_at) with the defaults applied."""
        start = self.starts_at or now
        end = self.ends_at if self.ends_at is not None else start + (self.duration or timedelta(0))
        return start, end


class Silence(BaseModel):
    """A stored silence."""

    id: str
    tenant: str
    matchers: Match
    alert_id: str | None = None
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    created_by: str
    comment: str = ""
    created_at: UtcDatetime
    updated_at: UtcDatetime

    def state(self, now: datetime) -> SilenceState:
        """pending, active or expired at now."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"


class SilenceError(ValueError):
    """A silence that cannot be created as asked; field names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def silence_from_row(row: SilenceRow) -> Silence:
    """The stored silence as a domain model."""
    return Silence(
        id=row.id,
        tenant=row.tenant,
        matchers=Match.model_validate(row.matchers),
        alert_id=row.alert_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        created_by=row.created_by,
        comment=row.comment,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def as_rule(silence: Silence) -> Rule:
    """A silence as a rule without actions, so the rules engine evaluates its matchers."""
    return Rule(name=silence.id, tenant=silence.tenant, match=silence.matchers)


def matchers_for_alert(alert: Alert) -> Match:
    """Matchers for the identity of an alert, so a silence outlives a resolve and re-fire of the same thing.

    An alert's fingerprint is the events' dedup_key when they carry one, else a hash of kind, scope and title;
    the matchers test exactly those fields with `eq`, so they match what the fingerprint matches.
    """
    if not alert.fingerprint.startswith("h:"):
        return Match(where=[Condition(field="dedup_key", op=ConditionOp.eq, value=alert.fingerprint)])
    where = [
        Condition(field="kind", op=ConditionOp.eq, value=alert.kind),
        Condition(field="title", op=ConditionOp.eq, value=alert.title),
        Condition(field="scope.namespace", op=ConditionOp.eq, value=alert.scope.namespace),
        Condition(field="scope.repo", op=ConditionOp.eq, value=alert.scope.repo),
        Condition(field="scope.digest", op=ConditionOp.eq, value=alert.scope.digest),
        Condition(field="scope.labels", op=ConditionOp.eq, value=dict(alert.scope.labels)),
    ]
    return Match(where=where)


class SilenceMatcher:
    """Evaluates the silences in force against events, reusing compiled rule sets between events.

    It also keeps the unexpired silences of every tenant, reloaded only when the silence revision (bumped by
    every write, on any replica) moves: an event then costs one primary-key read instead of loading and parsing
    every silence. Time alone never needs a reload: a silence ends, or a pending one starts, by the clock.
    """

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, ...], RuleSet] = {}
        self._revision: int | None = None
        self._unexpired: list[Silence] = []
        self._loaded_at = datetime.min.replace(tzinfo=UTC)

    async def in_force(self, *, session: AsyncSession, tenant: str, now: datetime) -> list[Silence]:
        """The silences in force now for a tenant (its own and those for every tenant)."""
        await self.refresh(session=session, now=now)
        return self.in_force_as_loaded(tenant=tenant, now=now)

    async def refresh(self, *, session: AsyncSession, now: datetime) -> None:
        """Reload the unexpired silences if any was created or ended since the last load (one read if not)."""
        revision = await silence_store.revision(session=session)
        # Reload too when the clock went back (a restored database, a test), since the list was cut at load time.
        if revision != self._revision or now < self._loaded_at:
            rows = await silence_store.unexpired(session=session, now=now)
            self._unexpired = [silence_from_row(row) for row in rows]
            self._revision = revision
            self._loaded_at = now

    def in_force_as_loaded(self, *, tenant: str, now: datetime) -> list[Silence]:
        """The silences in force now for a tenant, as of the last refresh (a group of events refreshes once)."""
        return [s for s in self._unexpired if s.tenant in (tenant, "*") and s.starts_at <= now < s.ends_at]

    def matching(self, event: Event, silences: Sequence[Silence]) -> list[Silence]:
        """The silences (among those given, all in force) that match the event."""
        if not silences:
            return []
        key = tuple(s.id for s in silences)
        ruleset = self._compiled.get(key)
        if ruleset is None:
            if len(self._compiled) >= _CACHE_SIZE:
                self._compiled.pop(next(iter(self._compiled)))
            ruleset = self._compiled[key] = RuleSet([as_rule(s) for s in silences])
        names = {rule.name for rule in ruleset.match(event)}
        return [s for s in silences if s.id in names]


async def create(*, session: AsyncSession, db: Database, spec: SilenceIn, tenant: str, now: datetime) -> Silence:
    """Store a silence in the caller's transaction; SilenceError names a bad field."""
    matchers = spec.matchers
    if spec.alert_id is not None:
        alert = await alert_store.get(session=session, alert_id=spec.alert_id)
        if alert is None or tenant not in ("*", alert.tenant):
            raise SilenceError("alert_id", f"no alert {spec.alert_id!r} in tenant {tenant!r}")
        matchers = matchers_for_alert(alert)
    start, end = spec.span(now)
    if end <= start:
        raise SilenceError("ends_at", "a silence must end after it starts")
    if end <= now:
        raise SilenceError("ends_at", "a silence must end in the future")
    if end - start > MAX_SILENCE:
        raise SilenceError("ends_at", "a silence may last at most 366 days")
    row = SilenceRow(
        id=new_id("sil"),
        tenant=tenant,
        matchers=matchers.model_dump(mode="json"),
        alert_id=spec.alert_id,
        starts_at=start,
        ends_at=end,
        created_by=spec.created_by,
        comment=spec.comment,
        created_at=now,
        updated_at=now,
    )
    await silence_store.add(session=session, db=db, row=row)
    return silence_from_row(row)


async def create_silence(*, db: Database, spec: SilenceIn, tenant: str, now: datetime) -> Silence:
    """Store a silence in a transaction of its own; SilenceError names a bad field."""
    async with db.transaction() as session:
        return await create(session=session, db=db, spec=spec, tenant=tenant, now=now)


async def list_silences(
    *, db: Database, tenants: list[str] | None, state: str, now: datetime, limit: int
) -> list[Silence]:
    """Silences by state (active, pending, expired, all), the ones ending soonest first."""
    async with db.read() as session:
        rows = await silence_store.list_silences(session=session, tenants=tenants, state=state, now=now, limit=limit)
        return [silence_from_row(row) for row in rows]


async def get_silence(*, db: Database, silence_id: str) -> Silence | None:
    """One silence by id."""
    async with db.read() as session:
        row = await silence_store.get(session=session, silence_id=silence_id)
        return silence_from_row(row) if row is not None else None


async def end_silence(*, db: Database, silence_id: str, now: datetime) -> bool:
    """End a silence now (it stays listed as expired); False if it had already ended."""
    async with db.transaction() as session:
        return await silence_store.expire(session=session, db=db, silence_id=silence_id, now=now)


def describe(silence: Silence) -> str:
    """One line for the dry run and for chat replies."""
    who = f" by {silence.created_by}" if silence.created_by else ""
    why = f" ({silence.comment})" if silence.comment else ""
    return f"silence {silence.id}{who} until {silence.ends_at.isoformat()}{why}"
