"""Noise control: for each rule action an event triggers, decide whether, when and how it notifies.

screen() makes the decisions that come before the throttle window; the caller then admits every window of a
run of events in one statement and conclude()s each.

The decision, in order (the first that applies wins):

1. silence      a silence in force matches the event: recorded, nobody is notified.
2. cancelled    a resolve inside an action's `for:` wait cancels the pending notification (and sends no update).
3. digest       the action has `digest:`: the alert goes into the digest window instead of a message.
4. quiet hours  the event is below min_severity of a quiet window in force (global, rule, person) with
                `release: digest`: it goes into one digest sent when the window ends.
5. throttle     the dedup/throttle window of the idempotency key is open: counted, not sent; the next message
                that goes out says how many were suppressed.
6. quiet hours  (`release: end`): the delivery is created now with next_attempt_at = the window's end.
7. wait         `for: 5m`: the delivery is created with next_attempt_at = now + 5m and a wait row; a resolve
                before then cancels it (a conditional update pending -> cancelled in the resolve's transaction).
8. deliver      now.

Every decision writes only in the caller's transaction, so the event, its deliveries and its noise state commit
together. `explain` answers the same question without writing, for the dry run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from core import digests, reports
from core.clock import Clock
from core.config import AckbotConfig
from core.models.common import format_duration
from core.models.deliveries import DeliveryPurpose
from core.models.events import Event
from core.models.people import Person
from core.models.rules import Action, DigestOptions, QuietHours, Rule
from core.quiet_hours import Layer, QuietHold, layers_for, quiet_hold
from core.silences import Silence, SilenceMatcher, describe
from core.store import noise as noise_store
from core.store.db import Database
from core.store.noise import NoiseLedger
from core.store.tables import NoiseWaitRow

log = logging.getLogger("ackbot.noise")

# An update (resolve) held by quiet hours goes out this long after the notification held with it, so the two
# are claimed in order.
UPDATE_LAG = timedelta(seconds=1)
# Wait rows are kept this long after their wait ended (they only matter before), then pruned.
WAIT_RETENTION = timedelta(days=1)


@dataclass
class NoiseSettings:
    """What noise decisions need beyond the rule: global quiet hours, people, where links point."""

    quiet_hours: Sequence[QuietHours] = ()
    people: Mapping[str, Person] = field(default_factory=dict)
    public_url: str = ""
    worker: str = "ingest"
    matcher: SilenceMatcher = field(default_factory=SilenceMatcher)

    @classmethod
    def from_config(cls, config: AckbotConfig, *, public_url: str, worker: str = "ingest") -> NoiseSettings:
        """Settings from the config file."""
        return cls(
            quiet_hours=tuple(config.quiet_hours),
            people={p.name: p for p in config.people},
            public_url=public_url,
            worker=worker,
        )


@dataclass(frozen=True)
class NoiseDecision:
    """What one rule action does with one event, and why."""

    outcome: str  # deliver | hold | wait | suppress | silence | cancelled | digest
    reason: str
    until: datetime | None = None
    not_before: datetime | None = None
    suppressed_before: int = 0
    window_until: datetime | None = None
    wait_until: datetime | None = None
    digest_window: str | None = None
    digest_delivery: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def creates_delivery(self) -> bool:
        """Whether the caller creates a delivery for this action."""
        return self.outcome in ("deliver", "hold", "wait")

    def as_dict(self) -> dict[str, Any]:
        """The dry-run form."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "until": self.until.isoformat() if self.until else None,
            "not_before": self.not_before.isoformat() if self.not_before else None,
        }


def suppressed_phrase(count: int, window: timedelta) -> str:
    """ "14 similar suppressed in the last hour": what the next message says about what was held back."""
    words = {
        timedelta(minutes=1): "minute",
        timedelta(hours=1): "hour",
        timedelta(days=1): "day",
        timedelta(weeks=1): "week",
    }
    span = words.get(window) or format_duration(window)
    return f"{count} similar suppressed in the last {span}"


async def silences_for(*, session: AsyncSession, event: Event, now: datetime, settings: NoiseSettings) -> list[Silence]:
    """The silences in force that match the event (checked once per event, for every action)."""
    in_force = await settings.matcher.in_force(session=session, tenant=event.tenant, now=now)
    return settings.matcher.matching(event, in_force)


@dataclass(frozen=True)
class AwaitingWindow:
    """An action that passed every check but the last: whether it goes out depends on its throttle window."""

    hold: QuietHold | None  # quiet hours that will hold it (release: end), if any


async def screen(
    *,
    ledger: NoiseLedger,
    event: Event,
    rule: Rule,
    action: Action,
    action_index: int,
    purpose: DeliveryPurpose,
    silences: Sequence[Silence],
    settings: NoiseSettings,
    now: datetime,
) -> NoiseDecision | AwaitingWindow:
    """The checks before the throttle window (silence, a resolve within for:, digest, quiet hours into a digest):
    their decision, or what the window decides on. Writes go to the ledger (saved with the event)."""
    if silences:
        return NoiseDecision("silence", describe(silences[0]), until=max(s.ends_at for s in silences))
    channel = action.channel
    if purpose is DeliveryPurpose.update and event.alert_id:
        cancelled = ledger.cancel_waits(
            alert_id=event.alert_id, rule=rule.name, action_index=action_index, channel=channel
        )
        if cancelled:
            return NoiseDecision("cancelled", f"resolved within for: {cancelled} waiting notification(s) cancelled")
    layers = layers_for(global_windows=settings.quiet_hours, rule=rule, action=action, people=settings.people)
    if action.digest is not None:
        spec = digests.window_spec(
            tenant=event.tenant,
            rule=rule.name,
            action_index=action_index,
            channel=channel,
            target=action.target,
            schedule=action.digest,
            options=action.digest_options or DigestOptions(),
            now=now,
            quiet=layers,
        )
        return await _into_digest(ledger, spec, event, settings, now, f"digest {action.digest}")
    # An approval request is never held: someone (a deploy, a pipeline) is waiting on the answer.
    hold = None if action.approval is not None else quiet_hold(now=now, severity=event.severity, layers=layers)
    if hold is not None and hold.release == "digest":
        spec = digests.window_spec(
            tenant=event.tenant,
            rule=rule.name,
            action_index=action_index,
            channel=channel,
            target=action.target,
            schedule=None,
            options=action.digest_options or DigestOptions(),
            now=now,
            quiet_until=hold.until,
        )
        return await _into_digest(ledger, spec, event, settings, now, hold.describe())
    return AwaitingWindow(hold)


def conclude(
    *,
    awaiting: AwaitingWindow,
    admitted: noise_store.WindowDecision,
    action: Action,
    purpose: DeliveryPurpose,
    window: timedelta,
    now: datetime,
) -> NoiseDecision:
    """The decision once the throttle window has admitted the action or counted it."""
    if not admitted.admitted:
        reason = f"throttle {format_duration(window)}: {admitted.suppressed_now} suppressed in this window"
        return NoiseDecision("suppress", reason, until=admitted.window_until, window_until=admitted.window_until)
    return _timing(
        purpose=purpose,
        action=action,
        hold=awaiting.hold,
        now=now,
        suppressed_before=admitted.suppressed_before,
        window=window,
        window_until=admitted.window_until,
    )


async def _into_digest(
    ledger: NoiseLedger,
    spec: Any,
    event: Event,
    settings: NoiseSettings,
    now: datetime,
    why: str,
) -> NoiseDecision:
    window_id, delivery_id = await digests.add_event(
        session=ledger.session,
        db=ledger.db,
        spec=spec,
        event=event,
        now=now,
        worker=settings.worker,
        public_url=settings.public_url,
    )
    reason = f"{why}: window {window_id} closes {spec.window_end.isoformat()}"
    if delivery_id is not None:
        reason += "; it is full and was flushed now"
    return NoiseDecision("digest", reason, until=spec.window_end, digest_window=window_id, digest_delivery=delivery_id)


def _timing(
    *,
    purpose: DeliveryPurpose,
    action: Action,
    hold: QuietHold | None,
    now: datetime,
    suppressed_before: int,
    window: timedelta,
    window_until: datetime | None,
) -> NoiseDecision:
    """When an admitted delivery goes out: now, at the end of quiet hours, or after `for:`."""
    extra: dict[str, Any] = {}
    if suppressed_before:
        extra["suppressed_window"] = format_duration(window)
        extra["suppressed_text"] = suppressed_phrase(suppressed_before, window)
    not_before: datetime | None = None
    reasons = []
    outcome = "deliver"
    if hold is not None:
        not_before = hold.until + (UPDATE_LAG if purpose is DeliveryPurpose.update else timedelta(0))
        extra["held_until"] = not_before.isoformat()
        reasons.append(hold.describe())
        outcome = "hold"
    wait_until = None
    if action.wait is not None and purpose is DeliveryPurpose.notify:
        wait_until = now + action.wait
        not_before = max(not_before or wait_until, wait_until)
        reasons.append(f"for {format_duration(action.wait)}: sent at {wait_until.isoformat()} unless resolved first")
        if outcome == "deliver":
            outcome = "wait"
    if not reasons:
        reasons.append(
            f"no open throttle window; a {format_duration(window)} window opens"
            + (f" (the message says {suppressed_phrase(suppressed_before, window)})" if suppressed_before else "")
        )
    return NoiseDecision(
        outcome,
        "; ".join(reasons),
        until=not_before,
        not_before=not_before,
        suppressed_before=suppressed_before,
        window_until=window_until,
        wait_until=wait_until,
        extra=extra,
    )


async def explain(
    *,
    session: AsyncSession,
    event: Event,
    rule: Rule,
    action: Action,
    purpose: DeliveryPurpose,
    noise_key: str,
    window: timedelta,
    silences: Sequence[Silence],
    settings: NoiseSettings,
    now: datetime,
) -> dict[str, Any]:
    """What decide() would do, without writing anything: the outcome, the reason, and every check's view."""
    layers: list[Layer] = layers_for(
        global_windows=settings.quiet_hours, rule=rule, action=action, people=settings.people
    )
    hold = None if action.approval is not None else quiet_hold(now=now, severity=event.severity, layers=layers)
    open_window = await noise_store.peek(session=session, key=noise_key, now=now)
    checks: dict[str, Any] = {
        "silence": [
            {"id": s.id, "until": s.ends_at.isoformat(), "created_by": s.created_by, "comment": s.comment}
            for s in silences
        ],
        "quiet_hours": None
        if hold is None
        else {
            "window": hold.window.window,
            "timezone": hold.window.timezone,
            "source": hold.source,
            "min_severity": hold.window.min_severity.value,
            "release": hold.release,
            "until": hold.until.isoformat(),
        },
        "throttle": {
            "window": format_duration(window),
            "open_until": open_window.window_until.isoformat() if open_window else None,
            "suppressed": open_window.suppressed_now if open_window else 0,
        },
        "digest": None,
        "wait": format_duration(action.wait) if action.wait is not None else None,
    }
    if action.digest is not None:
        options = action.digest_options or DigestOptions()
        start, end = digests.window_bounds(schedule=action.digest, timezone=options.timezone, now=now, quiet=layers)
        checks["digest"] = {"schedule": action.digest, "window_start": start.isoformat(), "until": end.isoformat()}
    if silences:
        decision = NoiseDecision("silence", describe(silences[0]), until=max(s.ends_at for s in silences))
    elif action.digest is not None:
        until = datetime.fromisoformat(checks["digest"]["until"])
        decision = NoiseDecision("digest", f"digest {action.digest}: into the window that closes {until}", until=until)
    elif hold is not None and hold.release == "digest":
        decision = NoiseDecision("digest", hold.describe(), until=hold.until)
    elif open_window is not None:
        reason = f"throttle {format_duration(window)}: window open until {open_window.window_until.isoformat()}"
        decision = NoiseDecision("suppress", reason, until=open_window.window_until)
    else:
        decision = _timing(
            purpose=purpose, action=action, hold=hold, now=now, suppressed_before=0, window=window, window_until=None
        )
    if purpose is DeliveryPurpose.update and action.wait is not None and decision.outcome == "deliver":
        checks["wait"] = f"{format_duration(action.wait)}: a resolve inside the wait cancels the waiting notification"
    return {**decision.as_dict(), "checks": checks}


# ---------------------------------------------------------------- the scheduler every replica runs


@dataclass
class TickResult:
    """What one scheduler pass did."""

    digests: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    pruned_waits: int = 0


class NoiseScheduler:
    """Flushes due digests and fires due reports; every replica runs one, the database makes each happen once."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        config: AckbotConfig,
        public_url: str,
        worker: str,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.public_url = public_url
        self.worker = worker
        self.on_enqueued = on_enqueued

    async def tick(self) -> TickResult:
        """One pass: flush every due digest window, fire every due report, prune old wait rows."""
        now = self.clock.now()
        result = TickResult()
        result.digests = await digests.flush_due(db=self.db, now=now, worker=self.worker, public_url=self.public_url)
        result.reports = await reports.fire_due(
            db=self.db, config=self.config, now=now, worker=self.worker, public_url=self.public_url
        )
        async with self.db.transaction() as session:
            pruned = await session.execute(delete(NoiseWaitRow).where(NoiseWaitRow.until < now - WAIT_RETENTION))
            result.pruned_waits = int(getattr(pruned, "rowcount", 0) or 0)
        if result.digests or result.reports:
            log.info(
                "scheduler: %d digest(s) flushed, %d report delivery(ies)", len(result.digests), len(result.reports)
            )
            if self.on_enqueued is not None:
                self.on_enqueued()
        return result
