"""Group commit: concurrent requests share transactions, and each still gets its own answer and its own failure."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from core.clock import SystemClock
from core.ingest import IngestDeps, IngestResult
from core.intake import IngestQueue
from core.metrics import Metrics
from core.models.events import Alert, Event, EventIn, EventStatus
from core.models.rules import Action, Match, Rule
from core.rulebook import RuleBook
from core.store import migrate
from core.store.db import Database
from core.store.pg_direct import DirectConnection
from core.store.sqlite_driver import SqliteDirect
from core.store.tables import AlertRow, DeliveryRow, EventRow

ALL = Rule(name="all", match=Match(kinds=["disk.*"]), actions=[Action(channel="ops")])


def deps_for(db: Database, *, rules: list[Rule] | None = None, open_approval: Any = None) -> IngestDeps:
    return IngestDeps(
        db=db,
        rulebook=RuleBook(db=db, config_rules=rules if rules is not None else [ALL]),
        clock=SystemClock(),
        metrics=Metrics(),
        default_window=timedelta(minutes=5),
        channel_names=lambda: {"ops"},
        open_approval=open_approval,
    )


def disk(key: str, **extra: Any) -> EventIn:
    return EventIn.model_validate(
        {"kind": "disk.full", "title": f"disk {key}", "severity": "high", "dedup_key": key, **extra}
    )


def watch(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """What each connection sends, in order, as (connection, "statement" | "commit" | "rollback"): SQLAlchemy's
    statements and transaction ends, and those pg_direct sends itself (BEGIN, which only opens, is left out)."""
    sent: list[tuple[int, str]] = []

    # A connection is named by its SQLAlchemy Connection, which pg_direct's calls go under too.
    def on_statement(conn: Any, *_: Any) -> None:
        sent.append((id(conn), "statement"))

    def on_end(what: str) -> Callable[[Any], None]:
        return lambda conn: sent.append((id(conn), what))

    for kind in (DirectConnection, SqliteDirect):
        watch_direct(kind, sent, monkeypatch)
    listeners = {"before_cursor_execute": on_statement, "commit": on_end("commit"), "rollback": on_end("rollback")}
    for name, listener in listeners.items():
        event.listen(db.engine.sync_engine, name, listener)
    return sent


def watch_direct(kind: Any, sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    send_execute, send_fetch = kind.execute, kind.fetch

    async def direct_execute(direct: Any, sql: str) -> None:
        for what in ("commit", "rollback"):
            if sql.lower().startswith(what):
                sent.append((id(direct.conn.sync_connection), what))
        await send_execute(direct, sql)

    async def direct_fetch(direct: Any, sql: str, *args: Any) -> Sequence[Any]:
        sent.append((id(direct.conn.sync_connection), "statement"))
        return await send_fetch(direct, sql, *args)

    monkeypatch.setattr(kind, "execute", direct_execute)
    monkeypatch.setattr(kind, "fetch", direct_fetch)


def commits_in(sent: list[tuple[int, str]]) -> int:
    return sum(1 for _, what in sent if what == "commit")


async def count(db: Database, table: Any, *where: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def submit_one(queue: IngestQueue, incoming: EventIn, tenant: str = "t") -> IngestResult:
    (result,) = await queue.submit(events=[incoming], tenants=[tenant], source="api")
    return result


async def test_concurrent_requests_share_transactions(migrated_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db))
    sent = watch(db, monkeypatch)
    results = await asyncio.gather(*(submit_one(queue, disk(f"k{i}")) for i in range(60)))
    assert len({r.event_id for r in results}) == 60 and all(r.deliveries == 1 for r in results)
    # The first request goes alone; the 59 that queued behind it share a handful of transactions.
    assert 1 <= commits_in(sent) <= 6, sent
    assert await count(db, EventRow) == 60 and await count(db, DeliveryRow) == 60
    assert await count(db, AlertRow) == 60


async def test_one_failing_request_fails_alone(migrated_db: Database) -> None:
    db = migrated_db
    approve = Rule(
        name="approve",
        match=Match(kinds=["deploy.*"]),
        actions=[Action.model_validate({"channel": "ops", "approval": {"approvers": ["alice"]}})],
    )

    async def open_approval(_session: Any, event_: Event, _alert: Alert | None, _rule: Rule, _action: Action) -> str:
        raise ValueError(f"no approval for {event_.title}")

    queue = IngestQueue(lambda: deps_for(db, rules=[ALL, approve], open_approval=open_approval))
    bad = EventIn.model_validate({"kind": "deploy.start", "title": "deploy", "severity": "high"})
    outcomes = await asyncio.gather(
        *(submit_one(queue, disk(f"k{i}")) for i in range(10)), submit_one(queue, bad), return_exceptions=True
    )
    assert isinstance(outcomes[-1], ValueError)
    assert all(isinstance(o, IngestResult) for o in outcomes[:-1])
    assert await count(db, EventRow) == 10  # the failed request left nothing behind; the others were stored


async def test_same_client_id_twice_in_one_group(migrated_db: Database) -> None:
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db))
    # Two identities, one client id: the first stored wins and the other is answered as its duplicate.
    first, second = await asyncio.gather(
        submit_one(queue, disk("a", id="client-1")), submit_one(queue, disk("b", id="client-1"))
    )
    assert first.event_id == second.event_id
    assert [first.duplicate, second.duplicate].count(True) == 1
    assert await count(db, EventRow) == 1
    again = await submit_one(queue, disk("c", id="client-1"))
    assert again.duplicate and again.event_id == first.event_id


async def test_firing_and_resolve_in_one_group_keep_their_order(migrated_db: Database) -> None:
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db))
    fired, updated, resolved, other = await asyncio.gather(
        submit_one(queue, disk("x")),
        submit_one(queue, disk("x")),
        submit_one(queue, disk("x", status=EventStatus.resolved)),
        submit_one(queue, disk("y")),
    )
    assert fired.alert_id == updated.alert_id == resolved.alert_id != other.alert_id
    assert not fired.duplicate and updated.duplicate  # throttled within the dedup window
    assert resolved.deliveries == 1  # the resolve updates what was sent
    async with db.read() as session:
        alert = await session.get(AlertRow, fired.alert_id)
    assert alert is not None and alert.status == "resolved" and alert.event_count == 3


async def test_a_busy_writer_keeps_its_connection_between_groups(
    migrated_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under load a writer stores group after group on the connection it has (a checkout of the pool per group cost
    # more than some of the group's statements); it gives it back once requests stop coming.
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db))
    checkouts: list[int] = []
    event.listen(db.engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
    sent = watch(db, monkeypatch)
    for burst in range(10):
        # The next burst comes as soon as the previous one is answered, as clients in a closed loop send again.
        await asyncio.gather(*(submit_one(queue, disk(f"busy{burst}-{n}")) for n in range(3)))
    await queue.drain()
    assert commits_in(sent) >= 10 and len(checkouts) == 1, (commits_in(sent), len(checkouts))
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(EventRow)) == 30


async def test_drain_waits_for_requests_in_flight(migrated_db: Database) -> None:
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db))
    pending = [asyncio.create_task(submit_one(queue, disk(f"k{i}"))) for i in range(20)]
    await asyncio.sleep(0)
    await queue.drain()
    assert all(task.done() for task in pending)
    assert await count(db, EventRow) == 20


@pytest.mark.postgres
async def test_two_replicas_writing_the_same_alerts(pg_url: str) -> None:
    # Two processes' queues on two connection pools: overlapping groups in opposite orders conflict on new alerts
    # and lock existing ones; each group is stored again after a conflict, and every event counts once.
    first, second = Database(pg_url), Database(pg_url)
    try:
        await migrate.upgrade(first)
        queues = [IngestQueue(functools.partial(deps_for, db), writers=2) for db in (first, second)]
        keys = [f"shared-{i}" for i in range(30)]

        async def burst(queue: IngestQueue, order: list[str]) -> list[IngestResult]:
            return list(await asyncio.gather(*(submit_one(queue, disk(k)) for k in order)))

        one, two = await asyncio.gather(burst(queues[0], keys), burst(queues[1], list(reversed(keys))))
        assert len({r.alert_id for r in one + two}) == 30
        assert await count(first, AlertRow) == 30 and await count(first, EventRow) == 60
        async with first.read() as session:
            counts = (await session.execute(select(AlertRow.event_count))).scalars().all()
        assert sorted(set(counts)) == [2]
        # Within the dedup window each alert notified once, whichever replica saw it first.
        assert await count(first, DeliveryRow) == 30
    finally:
        await first.close()
        await second.close()


async def test_noise_outcomes_and_group_sizes_are_counted(migrated_db: Database) -> None:
    db = migrated_db
    deps = deps_for(db)
    queue = IngestQueue(lambda: deps)
    await asyncio.gather(*(submit_one(queue, disk("same")) for _ in range(3)), submit_one(queue, disk("other")))
    exposition = deps.metrics.render().decode()
    # Two identities notify once each; the two repeats of "same" fall inside its dedup window.
    assert 'ackbot_noise_decisions_total{outcome="deliver"} 2.0' in exposition
    assert 'ackbot_noise_decisions_total{outcome="suppress"} 2.0' in exposition
    assert "ackbot_intake_group_events_sum 4.0" in exposition


@pytest.mark.parametrize("writers", [1, 2])
async def test_bursts_and_pauses_leave_no_request_behind(migrated_db: Database, writers: int) -> None:
    # Writers start and finish as bursts come and go: a request that arrives as the last writer leaves must still
    # be stored, and no writer may fail on a queue another one emptied.
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db), writers=writers)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        sent = 0
        for burst in range(30):
            size = 1 + burst % 4
            await asyncio.wait_for(
                asyncio.gather(*(submit_one(queue, disk(f"b{burst}-{n}")) for n in range(size))), timeout=30
            )
            sent += size
            if burst % 3 == 0:
                await asyncio.sleep(0)  # the writers finish between some bursts and not others
        await queue.drain()
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []
    assert await count(db, EventRow) == sent


async def test_two_writers_overlap_statements_only_with_a_commit(
    migrated_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With two writers, a group's statements may run while the other group commits, never beside the other group's
    # statements: the second writer takes its group once the first has sent its statements, so it finds more
    # requests queued, and groups are larger.
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db), writers=2)
    sent = watch(db, monkeypatch)
    requests = []
    for n in range(100):
        requests.append(asyncio.create_task(submit_one(queue, disk(f"o{n}"))))
        await asyncio.sleep(0)  # requests keep coming while groups are written
    await asyncio.gather(*requests)
    assert await count(db, EventRow) == 100
    in_statements: set[int] = set()
    assert commits_in(sent) >= 2, sent
    for connection, what in sent:
        if what != "statement":
            in_statements.discard(connection)
            continue
        assert in_statements <= {connection}, "two groups sent statements at the same time"
        in_statements.add(connection)


async def test_requests_a_few_turns_behind_join_the_group(
    migrated_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request read from its socket reaches submit() a couple of loop turns after the one that woke the writer:
    # it joins that one's group instead of waiting for the next transaction.
    db = migrated_db
    queue = IngestQueue(lambda: deps_for(db))
    sent = watch(db, monkeypatch)

    async def after(turns: int, key: str) -> IngestResult:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await submit_one(queue, disk(key))

    results = await asyncio.gather(*(after(n % 3, f"late{n}") for n in range(9)))
    assert len({r.event_id for r in results}) == 9
    assert commits_in(sent) == 1, sent
