"""What an event asks of the rules, before anything is written: its identity, its stored form, the actions its
matched rules plan. Ingest stores what these say (core.ingest); the dry run (dry_run) explains them and writes
nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core import noise
from core.clock import Clock
from core.models.deliveries import DeliveryPurpose
from core.models.events import Event, EventIn
from core.models.people import ALL_TENANTS
from core.models.rules import Rule
from core.rulebook import RuleBook
from core.store import noise as noise_store
from core.store.alerts import Transition
from core.store.db import Database, new_id


@dataclass(frozen=True)
class ActionPlan:
    """What one rule action will do for one event (used by ingest and by the dry run)."""

    rule: str
    action_index: int
    channel: str
    noise_key: str
    window: timedelta
    purpose: DeliveryPurpose


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
    """The stored form of an incoming event: an id, a tenant and a receive time (now)."""
    return event_received(incoming, tenant=tenant, source=source, now=clock.now())


def event_received(incoming: EventIn, *, tenant: str, source: str, now: datetime) -> Event:
    """The stored form of an incoming event received at `now`."""
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


async def dry_run(
    *,
    db: Database,
    rulebook: RuleBook,
    event: Event,
    clock: Clock,
    default_window: timedelta,
    settings: noise.NoiseSettings,
    channels: Container[str],
) -> dict[str, Any]:
    """What an event would do, with nothing written or sent: the rules it matches, the first failed check of every
    other rule, and each action's outcome (silence, throttle, quiet hours, digest, wait, and until when)."""
    await rulebook.refresh()
    ruleset = rulebook.current()
    # Another tenant's rules cannot match this event and are not this caller's to see: only its tenant's and shared.
    tenant_of = {rule.name: rule.tenant for rule in rulebook.all_rules()}
    verdicts = [v for v in ruleset.explain(event) if tenant_of.get(v.rule, ALL_TENANTS) in (ALL_TENANTS, event.tenant)]
    matched = ruleset.match(event)
    transition = Transition.resolved if event.status == "resolved" else Transition.opened
    plans = plan_actions(
        event=event,
        identity=fingerprint(event, event.tenant),
        rules=matched,
        transition=transition,
        default_window=default_window,
    )
    actions = []
    now = clock.now()
    by_name = {rule.name: rule for rule in matched}
    async with db.read() as session:
        # The noise decisions, explained without writing: silence, throttle, quiet hours, digest, wait, and until when.
        silences = await noise.silences_for(session=session, event=event, now=now, settings=settings)
        for plan in plans:
            window = await noise_store.peek(session=session, key=plan.noise_key, now=now)
            line = describe_plan(plan, window)
            rule = by_name[plan.rule]
            line.update(
                await noise.explain(
                    session=session,
                    event=event,
                    rule=rule,
                    action=rule.actions[plan.action_index],
                    purpose=plan.purpose,
                    noise_key=plan.noise_key,
                    window=plan.window,
                    silences=silences,
                    settings=settings,
                    now=now,
                )
            )
            if plan.channel not in channels:
                line.update(outcome="skip", reason=f"channel {plan.channel!r} is not configured")
            actions.append(line)
    return {
        "event": event.model_dump(mode="json", exclude={"id", "received_at", "alert_id"}),
        "matched": [rule.name for rule in matched],
        "rules": [verdict.as_dict() for verdict in verdicts],
        "actions": actions,
        "sent": False,
    }
