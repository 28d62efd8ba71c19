"""Dedup and throttle windows, kept in the database so every replica agrees."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.models import DeliveryStatus
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
    until = now + window
    table = table_of(NoiseKeyRow)
    open_window = table.c.window_until > now
    statement = (
        db.insert(table)
        .values(key=key, window_until=until, suppressed=0, carried=0)
        .on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[table.c.key],
            set_={
                # Every right-hand side reads the row as it was before this update, on both backends.
                "carried": case((open_window, table.c.carried), else_=table.c.suppressed),
                "suppressed": case((open_window, table.c.suppressed + 1), else_=0),
                "window_until": case((open_window, table.c.window_until), else_=until),
            },
        )
        .returning(table.c.window_until, table.c.suppressed, table.c.carried)
    )
    window_until, suppressed, carried = (await session.execute(statement)).one()
    admitted = suppressed == 0
    return WindowDecision(admitted, window_until, carried if admitted else 0, suppressed)


async def peek(*, session: AsyncSession, key: str, now: datetime) -> WindowDecision | None:
    """The open window for key, if any, without changing it (for dry runs)."""
    row = await session.get(NoiseKeyRow, key)
    if row is None or row.window_until <= now:
        return None
    return WindowDecision(False, row.window_until, 0, row.suppressed)


@dataclass
class _Window:
    until: datetime
    suppressed: int
    carried: int


@dataclass(frozen=True)
class Wait:
    """A delivery still waiting out `for:`, whose alert a resolve in this group may cancel it for."""

    delivery_id: str
    alert_id: str
    rule: str
    action_index: int
    channel: str


# A window that closed long ago: what a key that never had one starts from.
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class NoiseLedger:
    """The dedup windows and `for:` waits one group of events touches: read (and on PostgreSQL locked) once,
    decided in memory with the same rules as admit(), and written back in a few statements by save()."""

    def __init__(self, *, session: AsyncSession, conn: AsyncConnection, db: Database, now: datetime) -> None:
        self.session = session  # for what is stored through the ORM (digests)
        self.conn = conn  # the session's connection, for the ledger's own Core statements
        self.db = db
        self.now = now
        self._windows: dict[str, _Window] = {}
        self._changed: set[str] = set()
        self._waiting: dict[str, list[Wait]] = {}
        self._cancelled: list[str] = []
        self._new_waits: list[dict[str, Any]] = []

    async def load(self, *, keys: Iterable[str], resolving_alerts: Iterable[str]) -> None:
        """Read the windows of these keys and the pending waits of these alerts."""
        wanted = sorted(set(keys) - self._windows.keys())
        table = table_of(NoiseKeyRow)
        if wanted:
            if self.db.is_postgres:
                # Every key gets a row first, so that the SELECT below can lock it: a key another replica is
                # opening at this moment makes one of us wait for the other instead of both admitting.
                empty = [{"key": key, "window_until": _NEVER, "suppressed": 0, "carried": 0} for key in wanted]
                insert_missing = self.db.insert(table).on_conflict_do_nothing()  # type: ignore[attr-defined]
                await self.conn.execute(insert_missing, empty)
            query = select(table.c.key, table.c.window_until, table.c.suppressed, table.c.carried).where(
                table.c.key.in_(wanted)
            )
            if self.db.is_postgres:
                query = query.order_by(table.c.key).with_for_update()
            for key, until, suppressed, carried in (await self.conn.execute(query)).all():
                self._windows[key] = _Window(until, suppressed, carried)
            for key in wanted:
                self._windows.setdefault(key, _Window(_NEVER, 0, 0))
        alerts = sorted(set(resolving_alerts))
        if alerts:
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
                self._waiting[alert_id] = []  # read afresh: an earlier round may have added or cancelled some
            for row in (await self.conn.execute(pending_waits)).all():
                wait = Wait(*row)
                self._waiting.setdefault(wait.alert_id, []).append(wait)

    def admit(self, *, key: str, window: timedelta) -> WindowDecision:
        """Let the first occurrence of key in a window through and count the others (key must have been loaded)."""
        state = self._windows[key]
        self._changed.add(key)
        if state.until > self.now:
            state.suppressed += 1
            return WindowDecision(False, state.until, 0, state.suppressed)
        state.carried, state.suppressed, state.until = state.suppressed, 0, self.now + window
        return WindowDecision(True, state.until, state.carried, 0)

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
        """Write the windows, the new waits (after their deliveries) and the cancellations."""
        if self._changed:
            table = table_of(NoiseKeyRow)
            rows = [
                {"key": k, "window_until": w.until, "suppressed": w.suppressed, "carried": w.carried}
                for k, w in ((k, self._windows[k]) for k in sorted(self._changed))
            ]
            excluded = self.db.insert(table).excluded  # type: ignore[attr-defined]
            upsert = self.db.insert(table).on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=[table.c.key],
                set_={c: excluded[c] for c in ("window_until", "suppressed", "carried")},
            )
            await self.conn.execute(upsert, rows)
            self._changed.clear()
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
