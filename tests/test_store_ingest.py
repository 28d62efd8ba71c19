"""What ingest's hot statements write and read back, on both backends: they skip work SQLAlchemy would do, and
must come out as if they had not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import DateTime, insert, select
from sqlalchemy.dialects import sqlite

from core.models.common import Severity
from core.models.events import Alert, Event, Link
from core.store import alerts as alert_store
from core.store.alerts import Transition
from core.store.db import Database, direct_of
from core.store.tables import AlertRow, EventRow, UtcDateTime, table_of
from tests.test_store import T0, _event


async def test_a_firing_says_its_alert_as_stored(migrated_db: Database) -> None:
    # The upsert returns only what the database decided (id, counts, acknowledgement...): the alert a change
    # shows, made of those and of the columns just sent, is the alert as stored, for a new and an updated one.
    db = migrated_db
    first = _event()
    later = _event(at=T0 + timedelta(minutes=1)).model_copy(
        update={
            "kind": "k2",
            "severity": Severity.critical,
            "title": "disk fuller",
            "summary": "98%",
            "payload": {"used": 0.98},
        }
    )

    async def stored(alert_id: str) -> Alert | None:
        async with db.read() as session:
            return await alert_store.get(session=session, alert_id=alert_id)

    async with db.transaction() as session:
        opened = await alert_store.apply_event(session=session, db=db, event=first, fingerprint="fp")
    assert opened.transition is Transition.opened and opened.alert is not None
    assert opened.alert == await stored(opened.alert.id)
    async with db.transaction() as session:
        await alert_store.mark_acknowledged(session=session, alert_id=opened.alert.id, by="carol", at=T0)
    async with db.transaction() as session:
        updated = await alert_store.apply_event(session=session, db=db, event=later, fingerprint="fp")
    now = await stored(opened.alert.id)
    assert updated.transition is Transition.updated and updated.alert == now
    assert now is not None and now.acknowledged_by == "carol" and now.event_count == 2
    assert now.first_seen == T0 and now.last_seen == T0 + timedelta(minutes=1) and now.title == "disk fuller"


async def test_sqlite_datetimes_are_stored_as_sqlalchemy_writes_them() -> None:
    # UtcDateTime writes SQLite's text itself (cheaper): it must be the text SQLAlchemy's DATETIME writes for the
    # value in UTC, or comparisons with stored rows would change.
    dialect = sqlite.dialect()
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None
    east, west = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))
    values = [
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 0, 0, 7, tzinfo=UTC),
        datetime(2026, 3, 1, 2, 30, tzinfo=east),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=west),
        datetime(2026, 3, 1, 9, 0, 0, 120000),  # naive: taken as UTC
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 1, 1, tzinfo=UTC),
    ]
    for value in values:
        utc = value.astimezone(UTC) if value.tzinfo else value
        assert ours(value) == theirs(utc.replace(tzinfo=None)), value
    assert ours(None) is None


async def test_firings_stored_with_their_alerts_leave_the_rows_of_two_statements(migrated_db: Database) -> None:
    # On PostgreSQL a run's firings upsert their alerts and insert themselves in one statement; the rows must be
    # those of the upsert followed by the INSERT of the events (on SQLite both runs take that path).
    db = migrated_db
    ingest_columns = [c for c in table_of(EventRow).c if c.name not in ("id", "alert_id")]
    alert_columns = [c for c in table_of(AlertRow).c if c.name not in ("id", "last_event_id")]

    def firing(tenant: str, n: int, minute: int, **changes: Any) -> Event:
        at = T0 + timedelta(minutes=minute)
        event = _event(at=at).model_copy(update={"tenant": tenant, "client_id": f"c{n}", "dedup_key": f"d{n}"})
        return event.model_copy(update={**changes, "payload": {"n": n}, "links": [Link(url="https://x.example/1")]})

    async def store(tenant: str, *, together: bool) -> None:
        runs = [
            [(firing(tenant, 1, 0), "fp-a"), (firing(tenant, 2, 0, ts=T0 - timedelta(days=1)), "fp-b")],
            [(firing(tenant, 3, 1, severity=Severity.low, summary="again"), "fp-a")],
        ]
        for run in runs:
            async with db.transaction() as session:
                conn = await session.connection()
                direct = await direct_of(session)
                book = alert_store.AlertBook(conn=conn, db=db, direct=direct)
                changes = await book.apply(run, store_events=together)
                unstored = [event for (event, _), change in zip(run, changes, strict=True) if not change.event_stored]
                for event, change in zip((e for e, _ in run), changes, strict=True):
                    assert change.event_stored is (together and db.is_postgres)
                    event.alert_id = change.alert_id
                if unstored:
                    await conn.execute(insert(table_of(EventRow)), [event_columns(e) for e in unstored])

    def event_columns(event: Event) -> dict[str, Any]:
        return {
            **event.model_dump(exclude={"scope", "links"}),
            "scope": event.scope.model_dump(mode="json"),
            "links": [link.model_dump(mode="json") for link in event.links],
        }

    await store("one", together=True)
    await store("two", together=False)
    async with db.read() as session:
        rows: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for tenant in ("one", "two"):
            alert_rows = await session.execute(
                select(*alert_columns).where(AlertRow.tenant == tenant).order_by(AlertRow.fingerprint)
            )
            event_rows = await session.execute(
                select(*ingest_columns, AlertRow.fingerprint, AlertRow.last_event_id == EventRow.id)
                .join(AlertRow, AlertRow.id == EventRow.alert_id)
                .where(EventRow.tenant == tenant)
                .order_by(EventRow.client_id)
            )
            rows[tenant] = (
                [{**row._asdict(), "tenant": "-"} for row in alert_rows],
                [{**row._asdict(), "tenant": "-"} for row in event_rows],
            )
    assert rows["one"] == rows["two"]
    alerts, events = rows["one"]
    assert [a["event_count"] for a in alerts] == [2, 1] and len(events) == 3
