"""The approvals scheduler: every replica's loop fires due escalation steps and expiries (each exactly once, the
store's conditional write decides who), writes the deferred creation audits, reloads keys, and forgets spent
nonces once their tokens can no longer verify."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from core import audit
from core.approvals import machine
from core.approvals.keys import KeyManager
from core.approvals.plans import Policy
from core.clock import Clock
from core.store import approvals as approval_store
from core.store.db import Database
from core.tokens import CLOCK_SKEW_SECONDS

log = logging.getLogger("ackbot.approvals")

SCHEDULER_BATCH = 100
KEY_REFRESH_SECONDS = 30.0
# Spent nonces are forgotten this often (each replica), once their tokens can no longer verify.
PRUNE_EVERY = timedelta(minutes=1)


class Scheduler:
    """Due work of approvals: the due times live in the database, so a restart loses nothing."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        keys: KeyManager,
        policy: Policy,
        interval: timedelta,
        changed: Callable[[str], None],
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys = keys
        self._policy = policy
        self._interval = interval.total_seconds()
        self._changed = changed
        self._pruned_at: datetime | None = None

    async def run_once(self, *, limit: int = SCHEDULER_BATCH) -> int:
        """Fire every due escalation step and expiry once; returns how many approvals this call advanced.

        Safe on any number of replicas at once: each step is written only on the version it was planned on.
        """
        now = self._clock.now()
        await self.audit_creations()
        async with self._db.read() as session:
            candidates = await approval_store.due_ids(session=session, now=now, limit=limit)
        advanced = 0
        for approval_id in candidates:
            try:
                applied = await approval_store.decide(
                    db=self._db,
                    approval_id=approval_id,
                    nonce=None,
                    now=now,
                    plan=lambda snapshot: machine.tick(snapshot, now=now, policy=self._policy),
                )
            except Exception:
                log.exception("approval %s: the scheduled step failed; it stays due", approval_id)
                continue
            if applied is not None and applied.plan.result.ok:
                for warning in applied.plan.warnings:
                    log.warning("approval %s: %s", approval_id, warning)
                advanced += 1
                self._changed(approval_id)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            # Past exp plus the skew any replica allows, a token is refused as expired: its nonce can go.
            await approval_store.prune_nonces(db=self._db, before=now - timedelta(seconds=CLOCK_SKEW_SECONDS))
            self._pruned_at = now
        return advanced

    async def audit_creations(self) -> int:
        """Write the deferred "approval.created" rows of approvals opened by rules (inside an ingest transaction,
        where appending would hold the audit lock across the batch); each exactly once."""
        async with self._db.transaction() as session:
            rows = await approval_store.take_unaudited(session=session, db=self._db)
            for row in rows:
                await audit.record(
                    session=session,
                    db=self._db,
                    type="approval.created",
                    at=row.created_at,
                    tenant=row.tenant,
                    approval_id=row.id,
                    alert_id=row.alert_id,
                    actor=row.created_by,
                    actor_platform="rule",
                    data={"targets": row.targets, "approvers": row.approvers, "quorum": row.quorum},
                )
        return len(rows)

    async def loop(self) -> None:
        """Run forever, every scheduler_interval."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the approvals scheduler failed; retrying")
            await asyncio.sleep(self._interval)

    async def key_loop(self) -> None:
        """Reload the token keys every KEY_REFRESH_SECONDS (rotations made by another replica or the CLI)."""
        while True:
            await asyncio.sleep(KEY_REFRESH_SECONDS)
            try:
                await self._keys.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reloading the token keys failed")
