"""Accepting events: one transaction stores the events, their alerts and the deliveries they cause (the outbox).

A transaction may hold the events of many requests (see core.intake): its work is read and written in bulk, a
few statements per round whatever the number of events, instead of several statements per event. What an event
asks for (its identity, the actions its rules plan) is worked out in core.planning; storing it is done here."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core import noise
from core.clock import Clock
from core.metrics import Metrics
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, Event, EventIn
from core.models.rules import Action, Rule
from core.planning import ActionPlan, event_received, fingerprint, plan_actions
from core.rulebook import RuleBook
from core.store import alerts as alert_store
from core.store import deliveries as delivery_store
from core.store import noise as noise_store
from core.store.alerts import AlertChange, Transition
from core.store.db import Database, direct_of
from core.store.deliveries import delivery_values
from core.store.noise import NoiseLedger
from core.store.pg_direct import Direct, Statement
from core.store.tables import EventRow, table_of

log = logging.getLogger("ackbot.ingest")


class IngestResult(BaseModel):
    """What POST /api/v1/events answers for each event."""

    event_id: str
    alert_id: str | None = None
    matched_rules: list[str]
    deliveries: int
    duplicate: bool
    silenced: bool = False


# Extension point for actions that ask for an approval: called inside the ingest transaction,
# returns the approval id the delivery belongs to.
ApprovalOpener = Callable[[AsyncSession, Event, Alert | None, Rule, Action], Awaitable[str]]


@dataclass
class IngestDeps:
    db: Database
    rulebook: RuleBook
    clock: Clock
    metrics: Metrics
    default_window: timedelta
    channel_names: Callable[[], set[str]]
    open_approval: ApprovalOpener | None = None
    noise: noise.NoiseSettings = field(default_factory=noise.NoiseSettings)


_EVENT_KEYS = (
    "id",
    "tenant",
    "client_id",
    "kind",
    "ts",
    "received_at",
    "severity",
    "status",
    "title",
    "summary",
    "scope",
    "payload",
    "links",
    "dedup_key",
    "alert_id",
    "source",
)


def _event_values(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "tenant": event.tenant,
        "client_id": event.client_id,
        "kind": event.kind,
        "ts": event.ts,
        "received_at": event.received_at,
        "severity": event.severity,
        "status": event.status,
        "title": event.title,
        "summary": event.summary,
        "scope": event.scope.model_dump(mode="json"),
        "payload": event.payload,
        "links": [link.model_dump(mode="json") for link in event.links],
        "dedup_key": event.dedup_key,
        "alert_id": event.alert_id,
        "source": event.source,
    }


@dataclass(frozen=True)
class Submission:
    """One request's events, each with the tenant it was accepted for."""

    events: Sequence[EventIn]
    tenants: Sequence[str]
    source: str


@dataclass
class _Item:
    submission: int
    position: int
    incoming: EventIn
    tenant: str
    source: str
    identity: str
    event: Event | None = None
    change: AlertChange | None = None
    rules: list[Rule] = field(default_factory=list)
    plans: list[ActionPlan] = field(default_factory=list)
    silenced: bool = False

    @property
    def client_key(self) -> tuple[str, str] | None:
        return (self.tenant, self.incoming.id) if self.incoming.id is not None else None


def rounds(items: Sequence[_Item]) -> list[list[_Item]]:
    """Cut a group, in identity order, into runs in which no identity appears twice. An event's alert and noise
    state then depend only on earlier runs (already written), so each run reads and writes its rows in bulk, and
    the outcome is that of storing the events one by one in identity order: the order alerts are locked in, in
    which a firing and its resolve keep their order, and digests fill as they would."""
    ordered = sorted(items, key=lambda item: (item.tenant, item.identity))
    runs: list[list[_Item]] = []
    in_run: set[tuple[str, str]] = set()
    for item in ordered:
        key = (item.tenant, item.identity)
        if not runs or key in in_run:
            runs.append([])
            in_run = set()
        runs[-1].append(item)
        in_run.add(key)
    return runs


@dataclass
class _Group:
    """What the rounds of one group share."""

    deps: IngestDeps
    session: AsyncSession  # the group's transaction, for what is stored through the ORM (approvals, digests)
    conn: AsyncConnection  # the same transaction, for Core statements (without the ORM's bookkeeping)
    direct: Direct  # its driver connection, for the statements every group runs
    now: datetime
    client_ids: dict[tuple[str, str], IngestResult] = field(default_factory=dict)
    silences_loaded: bool = False
    # Counted once the group commits (a group stored twice after a conflict must not count twice).
    rules_matched: list[str] = field(default_factory=list)
    deliveries_by_channel: list[str] = field(default_factory=list)
    suppressed: int = 0
    outcomes: list[str] = field(default_factory=list)
    _ledger: NoiseLedger | None = None

    @property
    def ledger(self) -> NoiseLedger:
        """The dedup windows and `for:` waits the group's actions touch."""
        if self._ledger is None:
            self._ledger = NoiseLedger(session=self.session, conn=self.conn, db=self.deps.db, now=self.now)
        return self._ledger

    async def save_ledger(self) -> None:
        """Write the ledger's new waits and cancellations (each round, so that the next one reads them)."""
        if self._ledger is not None:
            await self._ledger.save()


def _duplicate_of(event_id: str, alert_id: str | None) -> IngestResult:
    return IngestResult(event_id=event_id, alert_id=alert_id, matched_rules=[], deliveries=0, duplicate=True)


_EVENTS = table_of(EventRow)
# Built once: building a statement costs more than running it (SQLAlchemy's coercions and cache key).
_CLIENT_IDS = select(_EVENTS.c.tenant, _EVENTS.c.client_id, _EVENTS.c.id, _EVENTS.c.alert_id).where(
    _EVENTS.c.client_id.in_(bindparam("client_ids", expanding=True))
)
# Sent by the driver (pg_direct.Statement): the statements every group runs.
_INSERT_EVENTS = Statement(insert(_EVENTS), keys=list(_EVENT_KEYS))


async def _look_up_client_ids(group: _Group, items: Sequence[_Item]) -> None:
    wanted = {key for item in items if (key := item.client_key) is not None and key not in group.client_ids}
    if not wanted:
        return
    params = {"client_ids": sorted({client_id for _, client_id in wanted})}
    for tenant, client_id, event_id, alert_id in (await group.conn.execute(_CLIENT_IDS, params)).all():
        if (tenant, client_id) in wanted:
            group.client_ids[(tenant, client_id)] = _duplicate_of(event_id, alert_id)


async def _store_round(group: _Group, items: Sequence[_Item]) -> dict[tuple[int, int], IngestResult]:
    deps, now = group.deps, group.now
    answered: dict[tuple[int, int], IngestResult] = {}
    await _look_up_client_ids(group, items)
    fresh: list[tuple[_Item, Event]] = []
    for item in items:
        client_key = item.client_key
        earlier = group.client_ids.get(client_key) if client_key is not None else None
        if earlier is not None:
            answered[(item.submission, item.position)] = earlier
            continue
        event = event_received(item.incoming, tenant=item.tenant, source=item.source, now=now)
        if client_key is not None:
            # The same client id twice in one group (under two identities): the first one counts.
            group.client_ids[client_key] = _duplicate_of(event.id, None)
        fresh.append((item, event))

    book = alert_store.AlertBook(conn=group.conn, db=deps.db, direct=group.direct)
    changes = await book.apply([(event, item.identity) for item, event in fresh], store_events=True)
    for (item, event), change in zip(fresh, changes, strict=True):
        if change.alert_id is not None:
            event.alert_id = change.alert_id  # built for this group: nobody else holds it yet
            if item.client_key is not None:
                group.client_ids[item.client_key] = _duplicate_of(event.id, event.alert_id)
        item.event, item.change = event, change
    stored = [item for item, _ in fresh]
    unstored = [item for item in stored if not _change_of(item).event_stored]
    if unstored:
        # A concurrent request with the same client id on another connection makes this (or the statement that
        # stored the others with their alerts) raise IntegrityError; the group is then stored again, and finds
        # that event.
        await _INSERT_EVENTS.executemany(group.direct, [_event_values(_event_of(item)) for item in unstored])

    planned, resolving = _plan(group, stored)
    if planned:
        if not group.silences_loaded:
            await deps.noise.matcher.refresh(session=group.session, now=now)
            group.silences_loaded = True
        await group.ledger.load_waits(resolving_alerts=resolving)
    # Every action first meets the checks before its throttle window; then all the windows of the run are
    # admitted at once (identities are distinct in a run, so are their keys); then each action is concluded.
    screened = [await _screen(group, item) for item in stored]
    windows = {
        plan.noise_key: plan.window
        for found in screened
        for plan, first in found
        if isinstance(first, noise.AwaitingWindow)
    }
    admitted = await group.ledger.admit_all(windows) if windows else {}
    deliveries: list[dict[str, Any]] = []
    for item, found in zip(stored, screened, strict=True):
        answered[(item.submission, item.position)] = await _conclude(group, item, found, admitted, deliveries)
    if deliveries:
        # Approvals opened above are ORM rows the deliveries point at: written first.
        await group.session.flush()
        await delivery_store.insert_many(session=group.session, rows=deliveries)
    await group.save_ledger()
    return answered


def _event_of(item: _Item) -> Event:
    if item.event is None:
        raise RuntimeError("the item's event is built before it is stored")
    return item.event


def _change_of(item: _Item) -> AlertChange:
    if item.change is None:
        raise RuntimeError("the item's alert change is made before it is stored")
    return item.change


def _plan(group: _Group, items: Sequence[_Item]) -> tuple[bool, list[str]]:
    """Match rules and plan each item's actions; whether any action is planned, and the alerts being resolved."""
    deps = group.deps
    ruleset = deps.rulebook.current()
    known_channels = deps.channel_names()
    planned = False
    resolving: list[str] = []
    for item in items:
        event, change = _event_of(item), _change_of(item)
        item.rules = ruleset.match(event)
        group.rules_matched.extend(rule.name for rule in item.rules)
        if change.transition is Transition.ignored:
            continue
        for plan in plan_actions(
            event=event,
            identity=item.identity,
            rules=item.rules,
            transition=change.transition,
            default_window=deps.default_window,
        ):
            if plan.channel not in known_channels:
                log.warning("rule %s names channel %s, which is not configured; skipped", plan.rule, plan.channel)
                continue
            item.plans.append(plan)
            planned = True
        if item.plans and change.transition is Transition.resolved and event.alert_id:
            resolving.append(event.alert_id)
    return planned, resolving


Screened = list[tuple[ActionPlan, noise.NoiseDecision | noise.AwaitingWindow]]


async def _screen(group: _Group, item: _Item) -> Screened:
    event = _event_of(item)
    if not item.plans:
        return []
    # Silences are looked up once per event; a silenced event is recorded (event, alert) and notifies nobody.
    matcher = group.deps.noise.matcher
    silences = matcher.matching(event, matcher.in_force_as_loaded(tenant=event.tenant, now=group.now))
    item.silenced = bool(silences)
    rules_by_name = {rule.name: rule for rule in item.rules}
    screened: Screened = []
    for plan in item.plans:
        rule = rules_by_name[plan.rule]
        first = await noise.screen(
            ledger=group.ledger,
            event=event,
            rule=rule,
            action=rule.actions[plan.action_index],
            action_index=plan.action_index,
            purpose=plan.purpose,
            silences=silences,
            settings=group.deps.noise,
            now=group.now,
        )
        screened.append((plan, first))
    return screened


async def _conclude(
    group: _Group,
    item: _Item,
    screened: Screened,
    admitted: dict[str, noise_store.WindowDecision],
    deliveries: list[dict[str, Any]],
) -> IngestResult:
    deps, now = group.deps, group.now
    event, change = _event_of(item), _change_of(item)
    matched = [rule.name for rule in item.rules]
    if change.transition is Transition.ignored:
        return IngestResult(event_id=event.id, matched_rules=matched, deliveries=0, duplicate=False)
    rules_by_name = {rule.name: rule for rule in item.rules}
    created = 0
    suppressed = 0
    for plan, first in screened:
        rule = rules_by_name[plan.rule]
        action = rule.actions[plan.action_index]
        if isinstance(first, noise.AwaitingWindow):
            decision = noise.conclude(
                awaiting=first,
                admitted=admitted[plan.noise_key],
                action=action,
                purpose=plan.purpose,
                window=plan.window,
                now=now,
            )
        else:
            decision = first
        group.outcomes.append(decision.outcome)
        if decision.outcome == "suppress":
            suppressed += 1
            continue
        if not decision.creates_delivery:
            continue
        approval_id = None
        if action.approval is not None and deps.open_approval is not None and plan.purpose is DeliveryPurpose.notify:
            approval_id = await deps.open_approval(group.session, event, change.alert, rule, action)
        window_id = (decision.window_until or now).isoformat()
        values = delivery_values(
            tenant=event.tenant,
            channel=plan.channel,
            idempotency_key=hashlib.sha256(f"{plan.noise_key}:{window_id}".encode()).hexdigest()[:48],
            now=now,
            purpose=plan.purpose,
            event_id=event.id,
            alert_id=event.alert_id,
            approval_id=approval_id,
            rule=plan.rule,
            action_index=plan.action_index,
            target=action.target,
            suppressed_count=decision.suppressed_before,
            not_before=decision.not_before,
            extra=decision.extra or None,
        )
        deliveries.append(values)
        if decision.wait_until is not None and event.alert_id is not None:
            group.ledger.add_wait(
                delivery_id=values["id"],
                alert_id=event.alert_id,
                rule=plan.rule,
                action_index=plan.action_index,
                channel=plan.channel,
                until=decision.wait_until,
            )
        group.deliveries_by_channel.append(plan.channel)
        created += 1
    group.suppressed += suppressed
    return IngestResult(
        event_id=event.id,
        alert_id=event.alert_id,
        matched_rules=matched,
        deliveries=created,
        duplicate=created == 0 and suppressed > 0,
        silenced=item.silenced,
    )


@dataclass
class GroupOutcome:
    """The results of a stored group, per submission, and what to count once it has committed."""

    results: list[list[IngestResult]]
    group: _Group

    def count(self, *, metrics: Metrics, submissions: Sequence[Submission]) -> None:
        """Count what the committed group accepted."""
        for rule in self.group.rules_matched:
            metrics.labelled(metrics.rules_matched, rule).inc()
        for channel in self.group.deliveries_by_channel:
            metrics.labelled(metrics.deliveries, channel, "pending").inc()
        if self.group.suppressed:
            metrics.suppressed.inc(self.group.suppressed)
        for outcome in self.group.outcomes:
            metrics.labelled(metrics.noise_decisions, outcome).inc()
        metrics.intake_group_events.observe(sum(len(submission.events) for submission in submissions))
        for submission, results in zip(submissions, self.results, strict=True):
            for incoming, result in zip(submission.events, results, strict=True):
                if result.duplicate:
                    metrics.events_duplicate.inc()
                else:
                    metrics.labelled(metrics.events_received, incoming.kind, submission.source).inc()


async def store_group(*, session: AsyncSession, deps: IngestDeps, submissions: Sequence[Submission]) -> GroupOutcome:
    """Store the events of several requests, and the deliveries they cause, in the caller's transaction."""
    now = deps.clock.now()
    items = [
        _Item(number, position, incoming, tenant, submission.source, fingerprint(incoming, tenant))
        for number, submission in enumerate(submissions)
        for position, (incoming, tenant) in enumerate(zip(submission.events, submission.tenants, strict=True))
    ]
    direct = await direct_of(session)
    group = _Group(deps=deps, session=session, conn=await session.connection(), direct=direct, now=now)
    answered: dict[tuple[int, int], IngestResult] = {}
    for batch in rounds(items):
        answered.update(await _store_round(group, batch))
    if session.new or session.dirty or session.deleted:
        await session.flush()  # before the caller's written(): the group's statements are all sent then
    results = [
        [answered[(number, position)] for position in range(len(submission.events))]
        for number, submission in enumerate(submissions)
    ]
    return GroupOutcome(results, group)


# A group that met another transaction's row (the same new alert, client id or noise key, or a deadlock between
# two replicas) is stored again: the second time it reads what the other one committed.
STORE_ATTEMPTS = 4
_RETRIED_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def conflicted(exc: BaseException) -> bool:
    """Whether storing again can succeed: a unique conflict, a deadlock or a serialization failure."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return code in _RETRIED_SQLSTATES
    return False


async def store_committed(
    *,
    deps: IngestDeps,
    submissions: Sequence[Submission],
    written: Callable[[], None] | None = None,
    again: bool = False,
) -> list[list[IngestResult]]:
    """Store a group in its own transaction, again after a conflict; returns once it has committed. written, if
    given, is called when the group's statements are sent, before the commit (core.intake lets the next group
    start then); again: another group follows at once (see Database.transaction)."""
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            async with deps.db.transaction(again=again) as session:
                outcome = await store_group(session=session, deps=deps, submissions=submissions)
                if written is not None:
                    written()
        except DBAPIError as exc:
            if attempt == STORE_ATTEMPTS or not conflicted(exc):
                raise
            log.info("ingest: a concurrent transaction touched the same rows (%s); storing again", type(exc).__name__)
            continue
        outcome.count(metrics=deps.metrics, submissions=submissions)
        return outcome.results
    raise AssertionError("unreachable")


async def ingest(
    *, deps: IngestDeps, events: Sequence[EventIn], tenant_for: Callable[[EventIn], str], source: str = "api"
) -> list[IngestResult]:
    """Store events and the deliveries they cause in one transaction; only then may the caller answer 202."""
    submission = Submission(events, [tenant_for(incoming) for incoming in events], source)
    (results,) = await store_committed(deps=deps, submissions=[submission])
    return results
