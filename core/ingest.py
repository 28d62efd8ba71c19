"""Accepting events: one transaction stores the event, its alert and the deliveries it causes (the outbox)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import noise
from core.clock import Clock
from core.metrics import Metrics
from core.models import Action, Alert, DeliveryPurpose, Event, EventIn, Rule
from core.rulebook import RuleBook
from core.store import alerts as alert_store
from core.store import noise as noise_store
from core.store.alerts import AlertChange, Transition
from core.store.db import Database, new_id
from core.store.deliveries import new_delivery
from core.store.tables import EventRow

log = logging.getLogger("ackbot.ingest")


class IngestResult(BaseModel):
    """What POST /api/v1/events answers for each event."""

    event_id: str
    alert_id: str | None = None
    matched_rules: list[str]
    deliveries: int
    duplicate: bool
    silenced: bool = False


@dataclass(frozen=True)
class ActionPlan:
    """What one rule action will do for one event (used by ingest and by the dry run)."""

    rule: str
    action_index: int
    channel: str
    noise_key: str
    window: timedelta
    purpose: DeliveryPurpose


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


def fingerprint(event: Event | EventIn, tenant: str) -> str:
    """The identity of the thing an event is about: its dedup_key, else a hash of what names it."""
    if event.dedup_key:
        return event.dedup_key
    identity = {
        "tenant": tenant,
        "kind": event.kind,
        "namespace": event.scope.namespace,
        "repo": event.scope.repo,
        "digest": event.scope.digest,
        "labels": sorted(event.scope.labels.items()),
        "title": event.title,
    }
    return "h:" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:40]


def noise_key(*, tenant: str, rule: str, action_index: int, channel: str, identity: str, status: str) -> str:
    """The dedup/throttle key: one window per (tenant, rule action, channel, alert identity, status)."""
    raw = json.dumps([tenant, rule, action_index, channel, identity, status])
    return hashlib.sha256(raw.encode()).hexdigest()


def plan_actions(
    *, event: Event, identity: str, rules: Sequence[Rule], transition: Transition, default_window: timedelta
) -> list[ActionPlan]:
    """The deliveries the matched rules ask for, before noise control."""
    purpose = DeliveryPurpose.update if transition is Transition.resolved else DeliveryPurpose.notify
    plans = []
    for rule in rules:
        for index, action in enumerate(rule.actions):
            window = action.throttle or action.dedup_window or default_window
            key = noise_key(
                tenant=event.tenant,
                rule=rule.name,
                action_index=index,
                channel=action.channel,
                identity=identity,
                status=event.status,
            )
            plans.append(ActionPlan(rule.name, index, action.channel, key, window, purpose))
    return plans


def build_event(incoming: EventIn, *, tenant: str, source: str, clock: Clock) -> Event:
    """The stored form of an incoming event: an id, a tenant and a receive time."""
    now = clock.now()
    return Event(
        id=new_id("evt"),
        client_id=incoming.id,
        kind=incoming.kind,
        tenant=tenant,
        ts=incoming.ts or now,
        received_at=now,
        severity=incoming.severity,
        status=incoming.status,
        title=incoming.title,
        summary=incoming.summary,
        scope=incoming.scope,
        payload=incoming.payload,
        dedup_key=incoming.dedup_key,
        links=incoming.links,
        source=source,
    )


def _event_row(event: Event) -> EventRow:
    return EventRow(
        id=event.id,
        tenant=event.tenant,
        client_id=event.client_id,
        kind=event.kind,
        ts=event.ts,
        received_at=event.received_at,
        severity=event.severity,
        status=event.status,
        title=event.title,
        summary=event.summary,
        scope=event.scope.model_dump(mode="json"),
        payload=event.payload,
        links=[link.model_dump(mode="json") for link in event.links],
        dedup_key=event.dedup_key,
        alert_id=event.alert_id,
        source=event.source,
    )


async def _earlier_copy(session: AsyncSession, tenant: str, client_id: str) -> EventRow | None:
    query = select(EventRow).where(EventRow.tenant == tenant, EventRow.client_id == client_id)
    return (await session.execute(query)).scalar_one_or_none()


async def _ingest_one(
    session: AsyncSession, deps: IngestDeps, incoming: EventIn, tenant: str, source: str
) -> IngestResult:
    if incoming.id is not None:
        earlier = await _earlier_copy(session, tenant, incoming.id)
        if earlier is not None:
            return IngestResult(
                event_id=earlier.id, alert_id=earlier.alert_id, matched_rules=[], deliveries=0, duplicate=True
            )
    event = build_event(incoming, tenant=tenant, source=source, clock=deps.clock)
    identity = fingerprint(event, tenant)
    change: AlertChange = await alert_store.apply_event(session=session, event=event, fingerprint=identity)
    if change.alert is not None:
        event = event.model_copy(update={"alert_id": change.alert.id})
    if incoming.id is None:
        # Without a client id nothing can collide, and a savepoint is two more round trips per event.
        session.add(_event_row(event))
    else:
        try:
            async with session.begin_nested():
                session.add(_event_row(event))
        except IntegrityError:
            # The same client id arrived on another connection a moment ago.
            earlier = await _earlier_copy(session, tenant, incoming.id)
            if earlier is None:
                raise
            return IngestResult(
                event_id=earlier.id, alert_id=earlier.alert_id, matched_rules=[], deliveries=0, duplicate=True
            )

    rules = deps.rulebook.current().match(event)
    for rule in rules:
        deps.metrics.rules_matched.labels(rule=rule.name).inc()
    if change.transition is Transition.ignored:
        return IngestResult(
            event_id=event.id, alert_id=None, matched_rules=[r.name for r in rules], deliveries=0, duplicate=False
        )

    plans = plan_actions(
        event=event, identity=identity, rules=rules, transition=change.transition, default_window=deps.default_window
    )
    known_channels = deps.channel_names()
    actions_by_rule = {rule.name: rule for rule in rules}
    created = 0
    suppressed = 0
    now = deps.clock.now()
    # Silences are looked up once per event; a silenced event is recorded (event, alert) and notifies nobody.
    silences = await noise.silences_for(session=session, event=event, now=now, settings=deps.noise) if plans else []
    for plan in plans:
        if plan.channel not in known_channels:
            log.warning("rule %s names channel %s, which is not configured; skipped", plan.rule, plan.channel)
            continue
        rule = actions_by_rule[plan.rule]
        action = rule.actions[plan.action_index]
        decision = await noise.decide(
            session=session,
            db=deps.db,
            event=event,
            rule=rule,
            action=action,
            action_index=plan.action_index,
            purpose=plan.purpose,
            noise_key=plan.noise_key,
            window=plan.window,
            silences=silences,
            settings=deps.noise,
            now=now,
        )
        if decision.outcome == "suppress":
            suppressed += 1
            deps.metrics.suppressed.inc()
            continue
        if not decision.creates_delivery:
            continue
        approval_id = None
        if action.approval is not None and deps.open_approval is not None and plan.purpose is DeliveryPurpose.notify:
            approval_id = await deps.open_approval(session, event, change.alert, rule, action)
        window_id = (decision.window_until or now).isoformat()
        row = new_delivery(
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
        session.add(row)
        if decision.wait_until is not None and event.alert_id is not None:
            noise.register_wait(session=session, delivery=row, alert_id=event.alert_id, until=decision.wait_until)
        deps.metrics.deliveries.labels(channel=plan.channel, status="pending").inc()
        created += 1
    duplicate = created == 0 and suppressed > 0
    return IngestResult(
        event_id=event.id,
        alert_id=event.alert_id,
        matched_rules=[r.name for r in rules],
        deliveries=created,
        duplicate=duplicate,
        silenced=bool(silences) and bool(plans),
    )


async def ingest(
    *, deps: IngestDeps, events: Sequence[EventIn], tenant_for: Callable[[EventIn], str], source: str = "api"
) -> list[IngestResult]:
    """Store events and the deliveries they cause in one transaction; only then may the caller answer 202."""
    tenants = [tenant_for(incoming) for incoming in events]
    # Alerts are locked in identity order, whatever order a batch lists them in, so two overlapping batches
    # on PostgreSQL wait for each other instead of deadlocking. The sort is stable: a firing and its resolve
    # in one batch keep their order.
    order = sorted(range(len(events)), key=lambda i: (tenants[i], fingerprint(events[i], tenants[i])))
    answered: dict[int, IngestResult] = {}
    async with deps.db.transaction() as session:
        for index in order:
            answered[index] = await _ingest_one(session, deps, events[index], tenants[index], source)
    results = [answered[index] for index in range(len(events))]
    for incoming, result in zip(events, results, strict=True):
        if result.duplicate:
            deps.metrics.events_duplicate.inc()
        else:
            deps.metrics.events_received.labels(kind=incoming.kind, source=source).inc()
    return results


def describe_plan(plan: ActionPlan, decision: noise_store.WindowDecision | None) -> dict[str, Any]:
    """A dry-run line: what an action would do for the event, and why."""
    if decision is None:
        outcome = "deliver"
        reason = f"no open dedup window; a {int(plan.window.total_seconds())}s window would open"
    else:
        outcome = "suppress"
        reason = f"dedup/throttle window open until {decision.window_until.isoformat()}"
    return {
        "rule": plan.rule,
        "action": plan.action_index,
        "channel": plan.channel,
        "purpose": plan.purpose,
        "outcome": outcome,
        "reason": reason,
    }
