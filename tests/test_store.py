"""Storage on both backends: migrations match the models, noise windows, alert identity, outbox claims."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.engine import Connection

from core.clock import SystemClock
from core.ingest import IngestDeps, ingest
from core.metrics import Metrics
from core.models.common import Severity
from core.models.deliveries import DeliveryStatus
from core.models.events import Event, EventIn, EventStatus
from core.rulebook import RuleBook
from core.store import alerts as alert_store
from core.store import deliveries as delivery_store
from core.store import migrate
from core.store import noise as noise_store
from core.store.alerts import Transition
from core.store.db import Database, new_id
from core.store.tables import Base, DeliveryRow

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def test_migrations_match_the_models(migrated_db: Database) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with migrated_db.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
    assert await migrate.current_revision(migrated_db) == migrate.head_revision()


async def test_noise_window_admits_once_then_counts(migrated_db: Database) -> None:
    db = migrated_db
    window = timedelta(minutes=5)

    async def admit(now: datetime) -> noise_store.WindowDecision:
        async with db.transaction() as session:
            return await noise_store.admit(session=session, db=db, key="k1", window=window, now=now)

    first = await admit(T0)
    assert first.admitted and first.window_until == T0 + window and first.suppressed_before == 0
    for n in range(1, 4):
        held = await admit(T0 + timedelta(seconds=n))
        assert not held.admitted and held.suppressed_now == n
    later = await admit(T0 + timedelta(minutes=6))
    assert later.admitted and later.suppressed_before == 3 and later.window_until == T0 + timedelta(minutes=11)
    async with db.read() as session:
        peeked = await noise_store.peek(session=session, key="k1", now=T0 + timedelta(minutes=7))
        assert peeked is not None and not peeked.admitted
        assert await noise_store.peek(session=session, key="k1", now=T0 + timedelta(minutes=12)) is None


async def test_concurrent_admits_let_exactly_one_through(migrated_db: Database) -> None:
    db = migrated_db

    async def admit() -> bool:
        async with db.transaction() as session:
            decision = await noise_store.admit(session=session, db=db, key="race", window=timedelta(hours=1), now=T0)
            return decision.admitted

    results = await asyncio.gather(*(admit() for _ in range(20)))
    assert results.count(True) == 1


def _event(status: EventStatus = EventStatus.firing, at: datetime = T0) -> Event:
    return Event(
        id=new_id("evt"),
        kind="k",
        tenant="t",
        ts=at,
        received_at=at,
        severity=Severity.high,
        status=status,
        title="disk full",
    )


async def test_alert_identity_open_update_resolve(migrated_db: Database) -> None:
    db = migrated_db
    async with db.transaction() as session:
        opened = await alert_store.apply_event(session=session, db=db, event=_event(), fingerprint="fp")
        updated = await alert_store.apply_event(session=session, db=db, event=_event(), fingerprint="fp")
        resolved = await alert_store.apply_event(
            session=session, db=db, event=_event(EventStatus.resolved), fingerprint="fp"
        )
        ignored = await alert_store.apply_event(
            session=session, db=db, event=_event(EventStatus.resolved), fingerprint="fp"
        )
    assert opened.transition is Transition.opened and updated.transition is Transition.updated
    assert resolved.transition is Transition.resolved and ignored.transition is Transition.ignored
    assert opened.alert and updated.alert and resolved.alert
    assert opened.alert.id == updated.alert.id == resolved.alert.id
    assert resolved.alert.event_count == 3 and resolved.alert.status == "resolved"


async def test_concurrent_firings_open_one_alert(migrated_db: Database) -> None:
    # Ten transactions at once (on PostgreSQL, ten connections) fire one identity: the unique index lets one open
    # the alert, and the others, stored again after the conflict, update it.
    db = migrated_db
    deps = IngestDeps(
        db=db,
        rulebook=RuleBook(db=db, config_rules=[]),
        clock=SystemClock(),
        metrics=Metrics(),
        default_window=timedelta(minutes=5),
        channel_names=set,
    )
    incoming = EventIn(kind="disk.full", title="disk full", severity=Severity.high, dedup_key="same")

    async def fire() -> str:
        (result,) = await ingest(deps=deps, events=[incoming], tenant_for=lambda _: "t")
        assert result.alert_id is not None
        return result.alert_id

    ids = await asyncio.gather(*(fire() for _ in range(10)))
    assert len(set(ids)) == 1
    async with db.read() as session:
        alert = await alert_store.get(session=session, alert_id=ids[0])
    assert alert is not None and alert.event_count == 10


async def _add_deliveries(db: Database, count: int, now: datetime) -> list[str]:
    rows = [
        delivery_store.new_delivery(tenant="t", channel="c", idempotency_key=new_id("idem"), now=now)
        for _ in range(count)
    ]
    async with db.transaction() as session:
        session.add_all(rows)
    return [r.id for r in rows]


async def test_claims_never_overlap(migrated_db: Database) -> None:
    db = migrated_db
    ids = await _add_deliveries(db, 60, T0)

    async def claimer(worker: str) -> list[str]:
        got: list[str] = []
        while True:
            rows = await delivery_store.claim(db=db, worker=worker, now=T0, lease=timedelta(minutes=1), limit=7)
            if not rows:
                return got
            got += [r.id for r in rows]

    batches = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    claimed = [i for batch in batches for i in batch]
    assert sorted(claimed) == sorted(ids)


async def test_expired_lease_is_claimed_again_and_the_old_worker_cannot_settle(migrated_db: Database) -> None:
    db = migrated_db
    (delivery_id,) = await _add_deliveries(db, 1, T0)
    lease = timedelta(seconds=30)
    await delivery_store.claim(db=db, worker="dead", now=T0, lease=lease, limit=10)
    assert (
        await delivery_store.claim(db=db, worker="other", now=T0 + timedelta(seconds=10), lease=lease, limit=10) == []
    )
    (again,) = await delivery_store.claim(db=db, worker="other", now=T0 + timedelta(seconds=31), lease=lease, limit=10)
    assert again.id == delivery_id
    stale = await delivery_store.settle(
        db=db, delivery_id=delivery_id, worker="dead", started_at=T0, now=T0, outcome="sent", status=DeliveryStatus.sent
    )
    assert stale is False
    fresh = await delivery_store.settle(
        db=db,
        delivery_id=delivery_id,
        worker="other",
        started_at=T0,
        now=T0 + timedelta(seconds=32),
        outcome="sent",
        status=DeliveryStatus.sent,
        message_ref={"ts": "1.2"},
    )
    assert fresh is True
    async with db.read() as session:
        stored = await session.get(DeliveryRow, delivery_id)
        history = await delivery_store.attempts(session=session, delivery_id=delivery_id)
    assert stored is not None and stored.status == "sent" and stored.message_ref == {"ts": "1.2"}
    assert [a.number for a in history] == [1]


async def test_failed_delivery_waits_for_its_next_attempt(migrated_db: Database) -> None:
    db = migrated_db
    (delivery_id,) = await _add_deliveries(db, 1, T0)
    await delivery_store.claim(db=db, worker="w", now=T0, lease=timedelta(minutes=1), limit=1)
    await delivery_store.settle(
        db=db,
        delivery_id=delivery_id,
        worker="w",
        started_at=T0,
        now=T0,
        outcome="retry",
        status=DeliveryStatus.failed,
        next_attempt_at=T0 + timedelta(seconds=20),
        error="503",
    )
    assert (
        await delivery_store.claim(
            db=db, worker="w", now=T0 + timedelta(seconds=19), lease=timedelta(minutes=1), limit=1
        )
        == []
    )
    assert (
        len(
            await delivery_store.claim(
                db=db, worker="w", now=T0 + timedelta(seconds=20), lease=timedelta(minutes=1), limit=1
            )
        )
        == 1
    )
    async with db.read() as session:
        ids = (await session.execute(select(DeliveryRow.attempts))).scalars().all()
    assert ids == [1]
