"""Dedup and throttle windows, kept in the database so every replica agrees."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.models.deliveries import DeliveryStatus
from core.store.db import Database
from core.store.tables import DeliveryRow, NoiseKeyRow, NoiseWaitRow, table_of


@dataclass(frozen=True)
class WindowDecision:
    admitted: bool
    window_until: datetime
    suppressed_before: int  # how many were held back in the window that just closed (for "N similar suppressed")
    suppressed_now: int  # how many are held back in the current window, this one included


async def admit(*, session: AsyncSession, db: Database, key: str, window: timedelta, now: datetime) -> WindowDecision:
    """Let the first occurrence of key in a window through and count the others, atomically."""
    conn = await session.connection()
    return (await admit_many(conn=conn, db=db, windows={key: window}, now=now))[key]


async def admit_many(
    *, conn: AsyncConnection, db: Database, windows: dict[str, timedelta], now: datetime
) -> dict[str, WindowDecision]:
    """admit() for several distinct keys at once, in one statement: each key's first occurrence in its window
    gets through, the others are counted. The row of a key is locked until commit, so replicas agree."""
    if not windows:
        return {}
    statement = _admit_statement(db.dialect, now)
    # Keys in order, the order PostgreSQL locks their rows in: two replicas cannot deadlock on them.
    rows = [{"key": key, "window_until": now + windows[key], "suppressed": 0, "carried": 0} for key in sorted(windows)]
    decisions = {}
    for key, window_until, suppressed, carried in (await conn.execute(statement, rows)).all():
        admitted = suppressed == 0
        decisions[key] = WindowDecision(admitted, window_until, carried if admitted else 0, suppressed)
    return decisions


def _admit_statement(dialect: str, now: datetime) -> Any:
    # Built per call: `now` cannot be a parameter of its own in a many-row INSERT ... RETURNING.
    table = table_of(NoiseKeyRow)
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    open_window = table.c.window_until > now
    return insert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            # Every right-hand side reads the row as it was before this update, on both backends.
            "carried": case((open_window, table.c.carried), else_=table.c.suppressed),
            "suppressed": case((open_window, table.c.suppressed + 1), else_=0),
            "window_until": case((open_window, table.c.window_until), else_=insert.excluded.window_until),
        },
    ).returning(table.c.key, table.c.window_until, table.c.suppressed, table.c.carried)


async def peek(*, session: AsyncSession, key: str, now: datetime) -> WindowDecision | None:
    """The open window for key, if any, without changing it (for dry runs)."""
    row = await session.get(NoiseKeyRow, key)
    if row is None or row.window_until <= now:
        return None
    return WindowDecision(False, row.window_until, 0, row.suppressed)


@dataclass(frozen=True)
class Wait:
    """A delivery still waiting out `for:`, whose alert a resolve in this group may cancel it for."""

    delivery_id: str
    alert_id: str
    rule: str
    action_index: int
    channel: str


class NoiseLedger:
    """The dedup windows and `for:` waits one run of events touches: the pending waits of the alerts being resolved
    are read once, the windows are admitted in one statement, and new waits and cancellations are written by save()."""

    def __init__(self, *, session: AsyncSession, conn: AsyncConnection, db: Database, now: datetime) -> None:
        self.session = session  # for what is stored through the ORM (digests)
        self.conn = conn  # the session's connection, for the ledger's own Core statements
        self.db = db
        self.now = now
        self._waiting: dict[str, list[Wait]] = {}
        self._cancelled: list[str] = []
        self._new_waits: list[dict[str, Any]] = []

    async def load_waits(self, *, resolving_alerts: Iterable[str]) -> None:
        """Read the notifications of these alerts still waiting out `for:`."""
        alerts = sorted(set(resolving_alerts))
        if not alerts:
            return
        waits = table_of(NoiseWaitRow)
        deliveries = table_of(DeliveryRow)
        pending_waits = (
            select(waits.c.delivery_id, waits.c.alert_id, waits.c.rule, waits.c.action_index, waits.c.channel)
            .join(deliveries, deliveries.c.id == waits.c.delivery_id)
            .where(
                waits.c.alert_id.in_(alerts),
                waits.c.until > self.now,
                # Only what no worker has claimed yet can still be cancelled.
                deliveries.c.status == DeliveryStatus.pending,
            )
            .order_by(waits.c.delivery_id)
        )
        if self.db.is_postgres:
            pending_waits = pending_waits.with_for_update(of=deliveries)
        for alert_id in alerts:
            self._waiting[alert_id] = []  # read afresh: an earlier run may have added or cancelled some
        for row in (await self.conn.execute(pending_waits)).all():
            wait = Wait(*row)
            self._waiting[wait.alert_id].append(wait)

    async def admit_all(self, windows: dict[str, timedelta]) -> dict[str, WindowDecision]:
        """Admit each key (distinct) in its window: see admit_many."""
        return await admit_many(conn=self.conn, db=self.db, windows=windows, now=self.now)

    def cancel_waits(self, *, alert_id: str, rule: str, action_index: int, channel: str) -> int:
        """Cancel the notifications of this alert and rule action still waiting out `for:`; how many."""
        waiting = self._waiting.get(alert_id, [])
        hit = [w for w in waiting if (w.rule, w.action_index, w.channel) == (rule, action_index, channel)]
        if hit:
            self._waiting[alert_id] = [w for w in waiting if w not in hit]
            self._cancelled.extend(w.delivery_id for w in hit)
        return len(hit)

    def add_wait(
        self, *, delivery_id: str, alert_id: str, rule: str, action_index: int, channel: str, until: datetime
    ) -> None:
        """Remember a delivery waiting out `for:`, so a later resolve can cancel it."""
        self._new_waits.append(
            {
                "delivery_id": delivery_id,
                "alert_id": alert_id,
                "rule": rule,
                "action_index": action_index,
                "channel": channel,
                "until": until,
            }
        )

    async def save(self) -> None:
        """Write the new waits (after their deliveries) and the cancellations."""
        if self._new_waits:
            await self.conn.execute(insert(table_of(NoiseWaitRow)), self._new_waits)
            self._new_waits = []
        if self._cancelled:
            deliveries = table_of(DeliveryRow)
            await self.conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(self._cancelled), deliveries.c.status == DeliveryStatus.pending)
                .values(status=DeliveryStatus.cancelled, updated_at=self.now, last_error=CANCELLED_BY_RESOLVE)
            )
            waits = table_of(NoiseWaitRow)
            await self.conn.execute(delete(waits).where(waits.c.delivery_id.in_(self._cancelled)))
            self._cancelled = []


CANCELLED_BY_RESOLVE = "cancelled: resolved within for:"
