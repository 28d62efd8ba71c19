"""The outbox workers: claim due deliveries, pace them per destination, send, retry, dead-letter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.channels.base import Channel, Notification, SendResult
from core.channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from core.channels.retry import after_failure, asked_to_wait
from core.clock import Clock
from core.metrics import Metrics
from core.models.deliveries import DeliveryPurpose, DeliveryStatus, HeldUpdate
from core.models.events import Alert, Event
from core.secrets import SecretError
from core.store import alerts as alert_store
from core.store import deliveries as delivery_store
from core.store.convert import alert_from_columns, event_from_columns, event_from_row
from core.store.db import Database, new_id
from core.store.deliveries import DeliveryRecord, Settlement
from core.store.tables import AlertRow, DeliveryRow, EventRow, table_of

log = logging.getLogger("ackbot.dispatch")

# Read for every claimed batch: Core statements built once (building one costs more than running it, and the
# ORM's identity map is not needed for rows that are only read).
_ALERTS_BY_ID = select(table_of(AlertRow)).where(table_of(AlertRow).c.id.in_(bindparam("ids", expanding=True)))
_EVENTS_BY_ID = select(table_of(EventRow)).where(table_of(EventRow).c.id.in_(bindparam("ids", expanding=True)))

# Enrichers add purpose-specific parts (an approval and its buttons) to a notification being built.
Enricher = Callable[[AsyncSession, DeliveryRecord, dict[str, Any]], Awaitable[None]]
# Prefetchers read, for a whole claimed batch at once, what their enrichers will need for each delivery.
Prefetcher = Callable[[AsyncSession, list[DeliveryRecord]], Awaitable[None]]
# A delay shorter than this is slept off in the worker; a longer one goes back to the database.
INLINE_WAIT = 0.25
# Stopping: how long to wait for the workers after each cancellation, and how many times to cancel.
STOP_WAIT = 2.0
STOP_ROUNDS = 5
# Claims start at least this far apart. Every commit that queues work wakes the claimer; under a stream of
# decisions or events each wake found one row, so each row cost a claim transaction, a prefetch read and a
# settle transaction of its own. Spaced, a claim takes what came due meanwhile, and the rows that go out
# together are settled together. After a quiet spell the first claim is immediate.
CLAIM_SPACING = 0.025


@dataclass
class Bucket:
    """A token bucket in virtual time: each reservation takes the next free slot."""

    rate: float
    burst: float = 1.0
    next_free: float = 0.0

    def reserve(self, now: float) -> float:
        """Seconds until the reserved slot (0 if it is now)."""
        interval = 1.0 / self.rate
        # Allow up to `burst` messages at once after a quiet spell.
        start = max(self.next_free, now - interval * (self.burst - 1))
        self.next_free = start + interval
        return max(0.0, start - now)


@dataclass
class Pacer:
    """One bucket per destination, so pacing one destination never delays another."""

    buckets: dict[str, Bucket] = field(default_factory=dict)
    reserved: dict[str, float] = field(default_factory=dict)

    def delay(self, *, delivery_id: str, destination: str, rate: float, now: float) -> float:
        """How long this delivery must wait for its destination; reserves its slot."""
        slot = self.reserved.get(delivery_id)
        if slot is not None:
            if slot - now <= INLINE_WAIT:
                del self.reserved[delivery_id]
                return max(0.0, slot - now)
            return slot - now
        bucket = self.buckets.get(destination)
        if bucket is None or bucket.rate != rate:
            bucket = self.buckets[destination] = Bucket(rate=rate, next_free=bucket.next_free if bucket else 0.0)
        wait = bucket.reserve(now)
        if wait > INLINE_WAIT:
            self.reserved[delivery_id] = now + wait
        return wait


@dataclass
class DispatcherConfig:
    workers: int = 4
    lease: timedelta = timedelta(seconds=60)
    poll_interval: float = 0.5
    batch: int = 50
    public_url: str = ""


def new_worker_id() -> str:
    """A name for one process's outbox worker, unique across replicas (what its claims are recorded under)."""
    return f"{socket.gethostname()}:{new_id('wrk')}"


class Dispatcher:
    """Runs in every replica; the database decides which replica sends which delivery."""

    def __init__(
        self,
        *,
        worker_id: str | None = None,
        db: Database,
        channels: Mapping[str, Channel],
        clock: Clock,
        metrics: Metrics,
        config: DispatcherConfig,
        enrichers: list[Enricher] | None = None,
        prefetchers: list[Prefetcher] | None = None,
    ) -> None:
        self.db = db
        self.channels = channels
        self.clock = clock
        self.metrics = metrics
        self.config = config
        self.enrichers = enrichers or []
        self.prefetchers = prefetchers or []
        self.worker_id = worker_id or new_worker_id()
        self.pacer = Pacer()
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[DeliveryRecord] = asyncio.Queue(maxsize=config.workers * 2)
        self._tasks: list[asyncio.Task[None]] = []
        self._prefetched: dict[str, tuple[Alert | None, Event | None]] = {}
        self._stopping = False
        # Outcomes waiting to be recorded, and the task recording them: the outcomes that arrive while one
        # transaction is being written go together in the next one.
        self._settlements: list[tuple[Settlement, asyncio.Future[bool]]] = []
        self._settling: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look for due work now instead of at the next poll (called after an ingest commits)."""
        self._wake.set()

    async def start(self) -> None:
        """Start the claimer and the workers; pending and half-sent work from before a restart is picked up."""
        self._stopping = False
        self._tasks.append(asyncio.create_task(self._claim_loop(), name="ackbot-claimer"))
        for number in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._work_loop(), name=f"ackbot-worker-{number}"))

    async def stop(self) -> None:
        """Stop claiming and cancel the workers; what they held is reclaimed when its lease expires."""
        self._stopping = True
        pending = set(self._tasks)
        for _ in range(STOP_ROUNDS):
            if not pending:
                break
            # Cancel again each round: a channel library that swallowed one cancellation must not hang shutdown.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=STOP_WAIT)
        if pending:
            log.error("%d dispatcher tasks did not stop; their deliveries are reclaimed after the lease", len(pending))
        self._tasks.clear()
        if self._settling is not None:
            # Outcomes already known are recorded rather than sent again after the lease.
            _, unfinished = await asyncio.wait({self._settling}, timeout=STOP_WAIT)
            for task in unfinished:
                task.cancel()
        # Hand back what was claimed but not started, so another replica need not wait for the lease.
        leftovers = []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait().id)
        if leftovers:
            await self._release(leftovers, self.clock.now())

    async def run_once(self) -> int:
        """Claim and process one batch in the caller's task (for tests and `ackbot` one-shot commands)."""
        rows = await delivery_store.claim(
            db=self.db, worker=self.worker_id, now=self.clock.now(), lease=self.config.lease, limit=self.config.batch
        )
        await self._prefetch(rows)
        for row in rows:
            await self.process(row)
        return len(rows)

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        claimed_at = -math.inf
        while not self._stopping:
            try:
                free = self._queue.maxsize - self._queue.qsize()
                rows = []
                if free > 0:
                    claimed_at = loop.time()
                    rows = await delivery_store.claim(
                        db=self.db,
                        worker=self.worker_id,
                        now=self.clock.now(),
                        lease=self.config.lease,
                        limit=min(free, self.config.batch),
                    )
                await self._prefetch(rows)
                for row in rows:
                    await self._queue.put(row)
                if len(rows) == free and free > 0:
                    continue  # more may be due: claim again at once
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming deliveries failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval)
            spacing = claimed_at + CLAIM_SPACING - loop.time()
            if spacing > 0:
                await asyncio.sleep(spacing)

    async def _work_loop(self) -> None:
        while True:
            row = await self._queue.get()
            try:
                await self.process(row)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery %s: unexpected failure; it will be retried after its lease", row.id)

    async def _release(self, ids: list[str], when: datetime) -> None:
        async with self.db.transaction(autocommit=True) as session:
            await session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(ids), DeliveryRow.claimed_by == self.worker_id)
                .values(status=DeliveryStatus.pending, lease_until=None, claimed_by=None, next_attempt_at=when)
            )

    async def _prefetch(self, rows: list[DeliveryRecord]) -> None:
        # A few queries for a claimed batch instead of a few per delivery: the alert and event each one is
        # about, and what the prefetchers want (the approvals).
        alert_ids = {r.alert_id for r in rows if r.alert_id}
        event_ids = {r.event_id for r in rows if r.event_id}
        if not rows or (not alert_ids and not event_ids and not self.prefetchers):
            return
        async with self.db.read() as session:
            alerts: dict[str, Alert] = {}
            if alert_ids:
                found = await session.execute(_ALERTS_BY_ID, {"ids": sorted(alert_ids)})
                alerts = {row["id"]: alert_from_columns(dict(row)) for row in found.mappings()}
            events: dict[str, Event] = {}
            if event_ids:
                happened = await session.execute(_EVENTS_BY_ID, {"ids": sorted(event_ids)})
                events = {row["id"]: event_from_columns(dict(row)) for row in happened.mappings()}
            for prefetch in self.prefetchers:
                await prefetch(session, rows)
        for row in rows:
            self._prefetched[row.id] = (
                alerts.get(row.alert_id) if row.alert_id else None,
                events.get(row.event_id) if row.event_id else None,
            )

    async def build_notification(self, row: DeliveryRecord) -> Notification:
        """Everything a channel needs for this delivery, read fresh from the database."""
        fields: dict[str, Any] = {
            "delivery_id": row.id,
            "idempotency_key": row.idempotency_key,
            "tenant": row.tenant,
            "purpose": row.purpose,
            "channel": row.channel,
            "target": row.target,
            "suppressed_count": row.suppressed_count,
            "public_url": self.config.public_url,
            "created_at": row.created_at,
            "extra": row.extra or {},
        }
        prefetched = self._prefetched.pop(row.id, None)
        # A session that runs no query never connects: enrichers that do nothing for this row cost nothing.
        async with self.db.read() as session:
            if prefetched is not None:
                fields["alert"], fields["event"] = prefetched
            else:
                if row.alert_id:
                    fields["alert"] = await alert_store.get(session=session, alert_id=row.alert_id)
                if row.event_id:
                    event_row = await session.get(EventRow, row.event_id)
                    fields["event"] = event_from_row(event_row) if event_row is not None else None
            for enrich in self.enrichers:
                await enrich(session, row, fields)
            message_ref = None
            if row.purpose == DeliveryPurpose.update and not fields["extra"].get("message_ref"):
                # An update queued while the message it edits was still being sent: look the reference up now.
                message_ref = await delivery_store.latest_message_ref(
                    session=session,
                    channel=row.channel,
                    target=row.target,
                    alert_id=row.alert_id,
                    approval_id=row.approval_id,
                )
            fields["extra"] = {**fields["extra"], "message_ref": message_ref} if message_ref else fields["extra"]
        return Notification.model_validate(fields)

    async def process(self, row: DeliveryRecord) -> None:
        """Send one claimed delivery and record the outcome."""
        channel = self.channels.get(row.channel)
        started = self.clock.now()
        if channel is None:
            await self._finish(row, started, PermanentChannelError(f"channel {row.channel!r} is not configured"))
            return
        note = await self.build_notification(row)
        loop_now = asyncio.get_running_loop().time()
        wait = self.pacer.delay(
            delivery_id=row.id, destination=channel.destination(note), rate=channel.rate_per_second, now=loop_now
        )
        if wait > INLINE_WAIT:
            self.metrics.rate_limited.labels(channel=row.channel).inc()
            await self._release([row.id], started + timedelta(seconds=wait))
            return
        if wait > 0:
            await asyncio.sleep(wait)
        started = self.clock.now()
        await self._finish(row, started, await self._attempt(row, note))

    async def deliver_now(self, *, delivery_id: str) -> SendResult | ChannelError:
        """Send one delivery at once, outside the queue and its pacing, with no retry (test sends).

        The delivery is pending, or was inserted already claimed by this dispatcher (see claim_for_now).
        """
        now = self.clock.now()
        async with self.db.transaction(autocommit=True) as session:
            row = (
                await session.execute(
                    update(DeliveryRow)
                    .where(
                        DeliveryRow.id == delivery_id,
                        (DeliveryRow.status == DeliveryStatus.pending)
                        # Inserted already claimed by this worker, so no other worker can take it first.
                        | ((DeliveryRow.status == DeliveryStatus.sending) & (DeliveryRow.claimed_by == self.worker_id)),
                    )
                    .values(
                        status=DeliveryStatus.sending,
                        claimed_by=self.worker_id,
                        lease_until=now + self.config.lease,
                        updated_at=now,
                    )
                    .returning(DeliveryRow)
                )
            ).scalar_one_or_none()
        if row is None:
            return PermanentChannelError(f"delivery {delivery_id} is not pending")
        outcome = await self._attempt(row)
        await self._finish(row, now, outcome, final=True)
        return outcome

    def claim_for_now(self, row: DeliveryRow) -> None:
        """Mark a delivery about to be inserted as this dispatcher's, for deliver_now: no worker can take it first."""
        row.status = DeliveryStatus.sending
        row.claimed_by = self.worker_id
        row.lease_until = self.clock.now() + self.config.lease

    async def _attempt(self, row: DeliveryRecord, note: Notification | None = None) -> SendResult | ChannelError:
        channel = self.channels.get(row.channel)
        if channel is None:
            return PermanentChannelError(f"channel {row.channel!r} is not configured")
        try:
            return await self._send(channel, note or await self.build_notification(row))
        except ChannelError as exc:
            return exc
        except SecretError as exc:
            return PermanentChannelError(str(exc))
        except (TimeoutError, OSError) as exc:
            return TransientChannelError(f"{type(exc).__name__}: {exc}")

    async def _send(self, channel: Channel, note: Notification) -> SendResult:
        ref = note.extra.get("message_ref")
        if note.purpose == DeliveryPurpose.update and ref and channel.supports_update:
            return await channel.update(ref, note)
        return await channel.send(note)

    async def _finish(
        self, row: DeliveryRecord, started: datetime, outcome: SendResult | ChannelError, *, final: bool = False
    ) -> None:
        now = self.clock.now()
        channel = self.channels.get(row.channel)
        attempt = row.attempts + 1
        if isinstance(outcome, SendResult):
            settled = await self._settle(
                Settlement(
                    delivery_id=row.id,
                    started_at=started,
                    now=now,
                    outcome="sent",
                    status=DeliveryStatus.sent,
                    status_code=outcome.status_code,
                    message_ref=outcome.message_ref,
                )
            )
            if settled:
                self._count_sent(row.channel, created_at=row.created_at, now=now)
            return
        error = str(outcome)[:2000]
        if channel is None or final or not isinstance(outcome, TransientChannelError):
            transient = isinstance(outcome, TransientChannelError)
            # Dead at once; it keeps when it began failing: the time its earlier tries say, else now.
            failing_since, counted, next_at = row.failing_since or started, row.counted_failures, None
            result, reason = ("exhausted", "a one-off send") if transient else ("permanent", "a permanent error")
        else:
            verdict = after_failure(
                channel.retry,
                outcome,
                attempt=attempt,
                started=started,
                now=now,
                failing_since=row.failing_since,
                counted_failures=row.counted_failures,
            )
            failing_since, counted, next_at = verdict.failing_since, verdict.counted_failures, verdict.next_attempt_at
            result, reason = ("exhausted", verdict.reason) if next_at is None else ("retry", "")
            if asked_to_wait(outcome):
                self.metrics.rate_limited.labels(channel=row.channel).inc()
        status = DeliveryStatus.dead if next_at is None else DeliveryStatus.failed
        settled = await self._settle(
            Settlement(
                delivery_id=row.id,
                started_at=started,
                now=now,
                outcome="permanent" if status is DeliveryStatus.dead else "retry",
                status=status,
                next_attempt_at=next_at,
                status_code=outcome.status_code,
                error=error,
                failing_since=failing_since,
                counted_failures=counted,
            )
        )
        if settled:
            self.metrics.delivery_attempts.labels(channel=row.channel, result=result).inc()
            failing = (now - failing_since).total_seconds()
            if status is DeliveryStatus.dead:
                self.metrics.deliveries.labels(channel=row.channel, status="dead").inc()
                log.error(
                    "delivery %s to %s is dead after %d attempts over %.0fs (%s): %s",
                    row.id,
                    row.channel,
                    attempt,
                    failing,
                    reason,
                    error,
                )
            else:
                log.warning(
                    "delivery %s to %s failed (attempt %d, failing for %.0fs), retrying: %s",
                    row.id,
                    row.channel,
                    attempt,
                    failing,
                    error,
                )

    def _count_sent(self, channel: str, *, created_at: datetime, now: datetime) -> None:
        self.metrics.delivery_attempts.labels(channel=channel, result="sent").inc()
        self.metrics.deliveries.labels(channel=channel, status="sent").inc()
        self.metrics.delivery_latency.labels(channel=channel).observe(max(0.0, (now - created_at).total_seconds()))

    async def settle_held(self, held: HeldUpdate, *, shown: bool) -> None:
        """An update a decision queued claimed by this worker for the click's own answer: record it sent when that
        answer showed the decision (with the other outcomes of the moment), else hand it back to be sent now."""
        now = self.clock.now()
        if not shown:
            await self._release([held.delivery_id], now)
            self.wake()
            return
        settled = await self._settle(
            Settlement(
                delivery_id=held.delivery_id,
                started_at=held.created_at,
                now=now,
                outcome="sent",
                status=DeliveryStatus.sent,
                message_ref=held.message_ref,
            )
        )
        if settled:
            self._count_sent(held.channel, created_at=held.created_at, now=now)

    async def _settle(self, settlement: Settlement) -> bool:
        """Record an outcome; False if our lease was lost. Outcomes that arrive together share a transaction."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._settlements.append((settlement, future))
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self._settle_batches(), name="ackbot-settler")
        # Shielded: a worker cancelled at stop must not take the others' outcomes down with it.
        return await asyncio.shield(future)

    async def _settle_batches(self) -> None:
        while self._settlements:
            batch, self._settlements = self._settlements, []
            try:
                settled = await delivery_store.settle_many(
                    db=self.db, worker=self.worker_id, settlements=[s for s, _ in batch]
                )
            except Exception as exc:
                # Each waiting worker logs it; the deliveries are retried once their lease runs out.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for settlement, future in batch:
                if not future.done():
                    future.set_result(settlement.delivery_id in settled)

    async def refresh_gauges(self) -> None:
        """Set the dead-letter and failing gauges from the database, which every replica shares."""
        async with self.db.read() as session:
            counts = await delivery_store.count_dead(session=session)
            failing_since = await delivery_store.oldest_failing(session=session)
        dead: dict[str, int] = {name: 0 for name in self.channels}
        dead.update(counts)
        for channel, count in dead.items():
            self.metrics.deliveries_dead.labels(channel=channel).set(count)
        now = self.clock.now()
        for channel in {*self.channels, *failing_since}:
            since = failing_since.get(channel)
            age = max(0.0, (now - since).total_seconds()) if since is not None else 0.0
            self.metrics.delivery_failing_seconds.labels(channel=channel).set(age)
