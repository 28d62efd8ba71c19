"""The approval workflow: open, decide (the one entry point of every surface), escalate, expire, resume.

Every change is one transaction that also holds what it causes (durable before acknowledged): the message
updates, the signed callback and the rule's follow-up actions are outbox deliveries committed with the
decision, and the audit row is appended last in the same transaction. Decisions are conditional updates
(`UPDATE ... WHERE state IN (pending, escalated)`) taken under the approval's row lock, so concurrent clicks
on any number of replicas give exactly one decision. Escalations and expiries are due times in the database
(`next_due_at`); each replica's scheduler claims due approvals atomically, so each step fires exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.approvals.callback import CALLBACK_CHANNEL, CallbackChannel
from core.approvals.directory import IDENTITY_OF_CHANNEL_TYPE, PERSON_PREFIX, Directory
from core.approvals.keys import KeyManager
from core.approvals.models import (
    ApprovalInputError,
    ApprovalRequest,
    ApprovalView,
    DecisionReason,
    DecisionResult,
)
from core.channels.base import Button, ChannelContext
from core.clock import Clock
from core.config import AckbotConfig
from core.models import (
    Action,
    Actor,
    Alert,
    Approval,
    ApprovalState,
    Choice,
    DeliveryPurpose,
    EscalationStep,
    Event,
    HeldUpdate,
    Person,
    Rule,
)
from core.store import alerts as alert_store
from core.store import approvals as approval_store
from core.store import nonces as nonce_store
from core.store.approvals import ApprovalRecord, approval_from_row
from core.store.db import Database, new_id
from core.store.deliveries import DeliveryRecord, claimed_values, delivery_values, new_delivery
from core.store.deliveries import insert_many as insert_deliveries
from core.store.tables import ApprovalRow, DeliveryRow
from core.tokens import CLOCK_SKEW_SECONDS, TokenClaims, TokenError

log = logging.getLogger("ackbot.approvals")

CHOICE_LABELS = {Choice.acknowledge: "Acknowledge", Choice.deny: "Deny", Choice.escalate: "Escalate"}
FOLLOW_UP_HOOKS = {
    ApprovalState.acknowledged: "on_acknowledge",
    ApprovalState.denied: "on_deny",
    ApprovalState.escalated: "on_escalate",
    ApprovalState.expired: "on_expire",
}
MAX_WAIT_SECONDS = 60.0
# How often the shared long-poll watcher looks for decisions taken on another replica: one query per tick for
# every approval this process has a long poll waiting on, so a decision elsewhere is seen within this.
WAIT_POLL_SECONDS = 0.5
# The most approval ids one watcher query names (a long IN list stays well inside every backend's limits).
WAIT_POLL_BATCH = 500
SCHEDULER_BATCH = 100
KEY_REFRESH_SECONDS = 30.0
# At most this many prefetched approval rows are kept for deliveries not built yet.
PREFETCH_LIMIT = 10_000
# How many open approvals `list_pending_for` looks through before filtering by approver.
PENDING_SCAN = 500
# Spent nonces are forgotten this often (each replica), once their tokens can no longer verify.
PRUNE_EVERY = timedelta(minutes=1)
# The platform whose clicks a chat channel's buttons come back from.
CLICK_PLATFORM = {"slack": "slack", "teams": "teams"}
# How long the update of a clicked message is held for the click's own answer (Slack's response_url, which the
# listener allows 10 s) before the outbox edits the message itself: only if the process died in between.
ANSWER_HOLD = timedelta(seconds=30)


@dataclass(frozen=True)
class TargetPlan:
    """Where one message of an approval goes: a channel, and within it a person's address (or the default)."""

    channel: str
    target: str | None = None
    person: str | None = None


@dataclass(frozen=True)
class Preview:
    """The confirm page's view of a link: the refusal it would meet, or what it would record and as whom."""

    refusal: DecisionResult | None = None
    approval: Approval | None = None
    claims: TokenClaims | None = None
    person: Person | None = None
    choice: Choice | None = None

    @property
    def ok(self) -> bool:
        """Whether the link would be accepted now."""
        return self.refusal is None


@dataclass
class _Answer:
    """The message a click came from, which the surface's own answer replaces with the decided view.

    A final decision queues that message's update already claimed by `holder` (this process's outbox worker), so
    the outbox leaves it to the surface, which settles it (runtime.settle_answer). What else the decision queued
    decides whether the outbox is woken.
    """

    message_ref: Mapping[str, Any]
    holder: str
    held: HeldUpdate | None = None
    others: bool = True

    def hold(self, rows: list[dict[str, Any]], *, now: datetime) -> None:
        """Claim the clicked message's update among a final decision's deliveries (rows, changed in place)."""
        self.held, self.others = None, False
        for index, row in enumerate(rows):
            ref = (row["extra"] or {}).get("message_ref")
            if self.held is None and row["purpose"] is DeliveryPurpose.update and ref == self.message_ref:
                rows[index] = claimed_values(row, worker=self.holder, lease_until=now + ANSWER_HOLD)
                self.held = HeldUpdate(
                    delivery_id=row["id"], channel=row["channel"], message_ref=dict(ref), created_at=now
                )
            else:
                self.others = True


class _Refused(Exception):
    """Raised inside a decision's transaction to roll it back whole; the refusal is audited afterwards."""

    def __init__(self, result: DecisionResult) -> None:
        super().__init__(result.message)
        self.result = result


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "an unknown time"


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:48]


def next_due(*, created_at: datetime, expires_at: datetime, steps: Sequence[EscalationStep], level: int) -> datetime:
    """When the scheduler must act next: the next escalation step's time, else the expiry."""
    if level < len(steps):
        return min(created_at + steps[level].after, expires_at)
    return expires_at


class ApprovalService:
    """Approvals for every surface: the HTTP API, the web ack page, Slack, Teams. Keyword-only methods."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        config: AckbotConfig,
        rules: Callable[[], Sequence[Rule]],
        channel_types: Callable[[], Mapping[str, str]],
        public_url: Callable[[], str],
        on_commit: Callable[[], None] | None = None,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.keys = KeyManager(db=db, config=config)
        self.directory = Directory(config.people, config.groups)
        self._rules = rules
        self._channel_types = channel_types
        self._public_url = public_url
        self._on_commit = on_commit
        # The outbox worker that a clicked message's update is held under for the click's answer (None: never held).
        self._holder = holder
        # Long polls waiting on an approval: each future is answered with the final view when a decision in this
        # process knows it, or with None ("read it again") when it was changed without one at hand.
        self._waiters: dict[str, set[asyncio.Future[ApprovalView | None]]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._releasing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._pruned_at: datetime | None = None
        # Approval rows read for the dispatcher's claimed batch, by delivery id (see prefetch).
        self._prefetched: dict[str, ApprovalRecord] = {}

    # ------------------------------------------------------------ life cycle

    async def start(self, *, run_scheduler: bool = True) -> None:
        """Load (or generate) the keys and start the scheduler loop; due work from before a restart fires then."""
        await self.keys.load(now=self.clock.now())
        if run_scheduler:
            self._tasks.append(asyncio.create_task(self._scheduler_loop(), name="ackbot-approvals-scheduler"))
            self._tasks.append(asyncio.create_task(self._key_loop(), name="ackbot-approvals-keys"))

    async def stop(self) -> None:
        """Stop the loops and answer the long polls; nothing is lost, the due times are in the database."""
        self.release_waiters()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def release_waiters(self) -> None:
        """Answer every waiting long poll now with the approval as it stands (the process is shutting down).

        Without this a stop waits for the longest poll (up to MAX_WAIT_SECONDS); the clients simply ask again,
        of another replica or of this one once it is back.
        """
        self._releasing = True
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def callback_channel(self, context: ChannelContext) -> CallbackChannel:
        """The internal webhook channel that delivers signed callbacks (the runtime registers it)."""
        settings = self.config.approvals
        return CallbackChannel(
            context=context,
            secret=self.keys.callback_secret,
            secret_ref=settings.callback_secret,
            allow_private=settings.callback_allow_private,
            timeout=settings.callback_timeout,
        )

    async def _scheduler_loop(self) -> None:
        interval = self.config.approvals.scheduler_interval.total_seconds()
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the approvals scheduler failed; retrying")
            await asyncio.sleep(interval)

    async def _key_loop(self) -> None:
        while True:
            await asyncio.sleep(KEY_REFRESH_SECONDS)
            try:
                await self.keys.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reloading the token keys failed")

    def _committed(self, approval_id: str, view: ApprovalView | None = None, *, queued: bool = True) -> None:
        """After a commit that changed the approval: wake its long polls (with its final view, when known), and the
        outbox if the commit queued work for it."""
        futures = self._waiters.get(approval_id)
        if futures:
            answer = view if view is not None and view.approval.state.final else None
            for future in futures:
                if not future.done():
                    future.set_result(answer)
        if queued and self._on_commit is not None:
            self._on_commit()

    def _watch(self, approval_id: str) -> asyncio.Future[ApprovalView | None]:
        future: asyncio.Future[ApprovalView | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(approval_id, set()).add(future)
        if self._watcher is None and not self._releasing:
            self._watcher = asyncio.create_task(self._watch_loop(), name="ackbot-approvals-watcher")
        return future

    def _unwatch(self, approval_id: str, future: asyncio.Future[ApprovalView | None]) -> None:
        futures = self._waiters.get(approval_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiters[approval_id]

    async def _watch_loop(self) -> None:
        """One loop per process for every waiting long poll: which of their approvals were decided elsewhere?

        A decision in this process answers its waiters at once (see _committed); this catches the ones taken on
        another replica, or by a command line run, with one query per tick whatever the number of waiters.
        """
        try:
            while self._waiters:
                await asyncio.sleep(WAIT_POLL_SECONDS)
                waited = list(self._waiters)
                try:
                    for start in range(0, len(waited), WAIT_POLL_BATCH):
                        async with self.db.sessions() as session:
                            final = await approval_store.final_ids(
                                session=session, approval_ids=waited[start : start + WAIT_POLL_BATCH]
                            )
                        for approval_id in final:
                            for future in self._waiters.get(approval_id, ()):
                                if not future.done():
                                    future.set_result(None)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("looking for decisions taken elsewhere failed; the long polls wait on")
        finally:
            if self._watcher is asyncio.current_task():
                self._watcher = None

    # ------------------------------------------------------------ targets

    def _check_names(self, names: Sequence[str], field: str) -> None:
        for index, name in enumerate(names):
            if not self.directory.knows(name):
                raise ApprovalInputError(f"{field}[{index}]", f"no person or group named {name!r}")

    def plan_targets(self, targets: Sequence[str], *, field: str = "targets") -> list[TargetPlan]:
        """Resolve targets to messages: a channel name, or person:NAME (one message per platform they are on).

        "person:NAME/CHANNEL" restricts a person target to one channel. On a chat channel the target is the
        person's platform identity (Slack user id, AAD object id); on an e-mail channel their address.
        """
        types = {name: kind for name, kind in self._channel_types().items() if name != CALLBACK_CHANNEL}
        plans: list[TargetPlan] = []
        for index, raw in enumerate(targets):
            where = f"{field}[{index}]"
            text = raw.strip()
            if not text.startswith(PERSON_PREFIX):
                if text not in types:
                    raise ApprovalInputError(where, f"no channel named {text!r}")
                plans.append(TargetPlan(text))
                continue
            name, _, only = text.removeprefix(PERSON_PREFIX).partition("/")
            person = self.directory.person(name)
            if person is None:
                raise ApprovalInputError(where, f"no person named {name!r}")
            if only and only not in types:
                raise ApprovalInputError(where, f"no channel named {only!r}")
            platforms: set[str] = set()
            found = False
            for channel, kind in types.items():
                if only and channel != only:
                    continue
                identity = self.directory.identity_for(person, kind)
                platform = IDENTITY_OF_CHANNEL_TYPE.get(kind)
                if identity is None or platform is None or platform in platforms:
                    continue
                platforms.add(platform)
                plans.append(TargetPlan(channel, identity, person.name))
                found = True
            if not found:
                where_to = f"the channel {only!r}" if only else "any configured channel"
                raise ApprovalInputError(
                    where, f"{name!r} has no identity (slack, teams or email) that {where_to} can reach"
                )
        unique: dict[tuple[str, str | None], TargetPlan] = {}
        for plan in plans:
            unique.setdefault((plan.channel, plan.target), plan)
        return list(unique.values())

    def _plan_quietly(self, targets: Sequence[str], approval_id: str) -> list[TargetPlan]:
        plans: list[TargetPlan] = []
        for target in targets:
            try:
                plans += self.plan_targets([target])
            except ApprovalInputError as exc:
                log.warning("approval %s: target %r skipped: %s", approval_id, target, exc.message)
        return plans

    def _notify_delivery(self, row: ApprovalRecord, plan: TargetPlan, *, stage: str, now: datetime) -> DeliveryRow:
        return new_delivery(
            tenant=row.tenant,
            channel=plan.channel,
            idempotency_key=_key("approval", row.id, "notify", stage, plan.channel, plan.target or ""),
            now=now,
            purpose=DeliveryPurpose.notify,
            event_id=row.event_id,
            alert_id=row.alert_id,
            approval_id=row.id,
            rule=row.rule,
            target=plan.target,
            extra={"person": plan.person} if plan.person else None,
        )

    # ------------------------------------------------------------ opening

    async def create(self, *, request: ApprovalRequest, tenant: str, created_by: str | None = None) -> Approval:
        """Open an approval and queue one message per target, in one transaction; ApprovalInputError names a field."""
        self._check_names(request.approvers, "approvers")
        plans = self.plan_targets(request.targets)
        everyone = list(request.approvers)
        for index, step in enumerate(request.escalation):
            self._check_names(step.approvers, f"escalation[{index}].approvers")
            self.plan_targets(step.targets, field=f"escalation[{index}].targets")
            everyone += step.approvers
        eligible = self.directory.eligible_count(everyone) if everyone else len(self.directory.people)
        if request.quorum > eligible:
            raise ApprovalInputError(
                "quorum", f"{request.quorum} acknowledgements are needed but the approvers name {eligible} people"
            )
        now = self.clock.now()
        expires_at = now + request.timeout
        row = ApprovalRow(
            id=new_id("apr"),
            tenant=tenant,
            title=request.title,
            summary=request.summary,
            requester=request.requester,
            approvers=list(request.approvers),
            targets=list(request.targets),
            choices=[c.value for c in request.choices],
            state=ApprovalState.pending.value,
            quorum=request.quorum,
            allow_self_approval=request.allow_self_approval,
            escalation=[s.model_dump(mode="json") for s in request.escalation],
            escalation_level=0,
            callback_url=request.callback_url,
            context=request.context,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            next_due_at=next_due(created_at=now, expires_at=expires_at, steps=request.escalation, level=0),
        )
        async with self.db.transaction() as session:
            session.add(row)
            await session.flush()
            for plan in plans:
                session.add(self._notify_delivery(row, plan, stage="0", now=now))
            await audit.record(
                session=session,
                db=self.db,
                type="approval.created",
                at=now,
                tenant=tenant,
                approval_id=row.id,
                actor=created_by,
                actor_platform="api",
                data={
                    "targets": list(request.targets),
                    "approvers": list(request.approvers),
                    "quorum": request.quorum,
                    "expires_at": expires_at.isoformat(),
                },
            )
        self._committed(row.id)
        return approval_from_row(row)

    async def open_for_action(
        self, session: AsyncSession, event: Event, alert: Alert | None, rule: Rule, action: Action
    ) -> str:
        """The ingest hook: open the approval a rule action asks for, inside the ingest transaction.

        Ingest itself queues the action's message with the returned approval id, so the alert carries buttons.
        """
        spec = action.approval
        if spec is None:
            raise ValueError("open_for_action needs an action with approval:")
        now = self.clock.now()
        approvers = [name for name in spec.approvers if self.directory.knows(name)]
        for name in set(spec.approvers) - set(approvers):
            log.warning("rule %s: approver %r is neither a person nor a group; ignored", rule.name, name)
        steps = sorted((s for s in spec.escalation if s.after < spec.timeout), key=lambda s: s.after)
        choices = [c for c in Choice if c.value in spec.choices] or list(Choice)
        expires_at = now + spec.timeout
        subject = alert or event
        row = ApprovalRow(
            id=new_id("apr"),
            tenant=event.tenant,
            title=subject.title,
            summary=subject.summary,
            requester=None,
            approvers=approvers,
            targets=[action.channel],
            choices=[c.value for c in choices],
            state=ApprovalState.pending.value,
            quorum=min(spec.quorum, max(1, self.directory.eligible_count(approvers))),
            allow_self_approval=spec.allow_self_approval,
            escalation=[s.model_dump(mode="json") for s in steps],
            escalation_level=0,
            callback_url=None,
            context={
                "event_id": event.id,
                "alert_id": alert.id if alert else None,
                "kind": event.kind,
                "severity": event.severity.value,
                "rule": rule.name,
            },
            alert_id=alert.id if alert else None,
            event_id=event.id,
            rule=rule.name,
            created_by=f"rule:{rule.name}",
            # Audited after the ingest commits (by the scheduler, or by the first decision, whichever is first):
            # the audit lock taken here would be held across the whole batch and could deadlock two batches.
            created_audited=False,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            next_due_at=next_due(created_at=now, expires_at=expires_at, steps=steps, level=0),
        )
        session.add(row)
        await session.flush()
        return row.id

    async def _audit_creation(
        self, session: AsyncSession, *, approval_id: str | None = None, row: ApprovalRecord | None = None
    ) -> int:
        """Write the deferred "approval.created" rows (of one approval, or of a batch); each exactly once.

        `row`, read under its lock in this transaction, says whether there is anything to do for its approval.
        """
        if row is not None:
            if row.created_audited:
                return 0
            approval_id = row.id
        rows = await approval_store.take_unaudited(session=session, db=self.db, approval_id=approval_id)
        for row in rows:
            await audit.record(
                session=session,
                db=self.db,
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

    # ------------------------------------------------------------ reading

    async def get(self, *, approval_id: str) -> Approval | None:
        """One approval."""
        async with self.db.sessions() as session:
            return await approval_store.get(session=session, approval_id=approval_id)

    async def view(self, *, approval_id: str) -> ApprovalView | None:
        """One approval with its votes and next due time, as the API shows it."""
        async with self.db.direct_reads() as direct:
            row = await approval_store.get_row(session=direct, approval_id=approval_id)
            if row is None:
                return None
            # Votes exist only toward a quorum above one, or as the one acknowledgement that decided: a vote that
            # reaches the quorum decides in the same transaction, so an open quorum-1 approval has none to read.
            may_have_votes = row.quorum > 1 or row.state == ApprovalState.acknowledged.value
            votes = await approval_store.votes(session=direct, approval_id=approval_id) if may_have_votes else []
            return ApprovalView(approval=approval_from_row(row), votes=votes, next_due_at=row.next_due_at)

    async def wait(
        self, *, approval_id: str, seconds: float, check: Callable[[ApprovalView], object] | None = None
    ) -> ApprovalView | None:
        """The approval once it is final, or as it is after `seconds` (at most 60): a long poll.

        `check` sees the first read (the caller's permission check: it may raise to refuse). A decision in this
        process answers at once with the view it committed; one on another replica is seen by the shared watcher
        within WAIT_POLL_SECONDS. None when there is no such approval.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(seconds, MAX_WAIT_SECONDS))
        checked = False
        while True:
            # Registered before reading, so a decision committed between the read and the wait still wakes us.
            future = self._watch(approval_id) if seconds > 0 and not self._releasing else None
            try:
                current = await self.view(approval_id=approval_id)
                if current is not None and check is not None and not checked:
                    check(current)
                    checked = True
                remaining = deadline - loop.time()
                if future is None or current is None or current.approval.state.final or remaining <= 0:
                    return current
                try:
                    answer = await asyncio.wait_for(future, timeout=remaining)
                except TimeoutError:
                    answer = None  # time is up: read once more, and answer with that
                if answer is not None:
                    return answer
                if self._releasing:
                    return current
            finally:
                if future is not None:
                    self._unwatch(approval_id, future)

    async def list_approvals(
        self,
        *,
        tenants: list[str] | None,
        states: Sequence[ApprovalState] | None = None,
        alert_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Approval], str | None]:
        """Approvals newest first, filtered and paginated (ValueError for a cursor we did not make)."""
        async with self.db.sessions() as session:
            return await approval_store.list_approvals(
                session=session,
                tenants=tenants,
                states=[s.value for s in states] if states else None,
                alert_id=alert_id,
                limit=limit,
                cursor=cursor,
            )

    async def list_pending_for(self, *, actor: Actor, tenant: str | None = None, limit: int = 50) -> list[Approval]:
        """Open approvals this actor may decide, newest first (for a chat `pending` command)."""
        person = self.directory.resolve(actor)
        if person is None:
            return []
        now = self.clock.now()
        page, _ = await self.list_approvals(
            tenants=[tenant] if tenant else None,
            states=[ApprovalState.pending, ApprovalState.escalated],
            limit=PENDING_SCAN,
        )
        mine = [a for a in page if a.expires_at > now and self.directory.may_decide(person, a.approvers)]
        return mine[:limit]

    # ------------------------------------------------------------ buttons (the dispatcher's enricher)

    def buttons(
        self,
        *,
        approval: Approval,
        delivery_id: str,
        channel: str,
        subject: str | None = None,
        level: int | None = None,
        now: datetime | None = None,
    ) -> list[Button]:
        """Fresh tokens, one per choice, bound to this delivery and channel (and person, when it is for one)."""
        now = now or self.clock.now()
        seconds = int((approval.expires_at - now).total_seconds())
        if approval.state.final or seconds < 1:
            return []
        level = approval.escalation_level if level is None else level
        codec = self.keys.codec
        ttl = min(codec.ttl, seconds)
        public_url = self._public_url()
        out = []
        for choice in approval.choices:
            if choice is Choice.escalate and level >= len(approval.escalation):
                continue  # nobody left to escalate to: no button that can only be refused
            token = codec.issue(
                tenant=approval.tenant,
                approval_id=approval.id,
                channel=channel,
                choice=choice.value,
                delivery_id=delivery_id,
                subject=subject,
                ttl=ttl,
                now=int(now.timestamp()),
            )
            out.append(
                Button(choice=choice.value, label=CHOICE_LABELS[choice], token=token, url=f"{public_url}/ack/{token}")
            )
        return out

    async def prefetch(self, session: AsyncSession, rows: list[DeliveryRecord]) -> None:
        """Dispatcher prefetcher: read the approvals of a claimed batch in one query, for enrich."""
        wanted = {row.approval_id for row in rows if row.approval_id}
        if not wanted:
            return
        approvals = {row.id: row for row in await approval_store.get_rows(session=session, approval_ids=wanted)}
        if len(self._prefetched) > PREFETCH_LIMIT:
            self._prefetched.clear()  # deliveries claimed but never built (a stop): their entries go
        for row in rows:
            if row.approval_id in approvals:
                self._prefetched[row.id] = approvals[row.approval_id]

    async def enrich(self, session: AsyncSession, row: DeliveryRecord, fields: dict[str, Any]) -> None:
        """Dispatcher enricher: attach the approval, and buttons with fresh tokens while it is open."""
        if not row.approval_id:
            return
        approval_row = self._prefetched.pop(row.id, None) or await approval_store.get_row(
            session=session, approval_id=row.approval_id
        )
        if approval_row is None:
            return
        approval = approval_from_row(approval_row)
        fields["approval"] = approval
        extra = row.extra or {}
        if row.purpose not in (DeliveryPurpose.notify, DeliveryPurpose.update) or extra.get("follow_up"):
            return
        fields["buttons"] = self.buttons(
            approval=approval,
            delivery_id=row.id,
            channel=row.channel,
            subject=extra.get("person"),
            level=approval_row.escalation_level,
        )

    # ------------------------------------------------------------ tokens for the API and the web page

    async def issue_token(
        self,
        *,
        approval_id: str,
        channel: str,
        choice: Choice,
        by: str,
        delivery_id: str | None = None,
        subject: str | None = None,
        ttl: timedelta | None = None,
    ) -> tuple[str, TokenClaims]:
        """Issue one token for an open approval (POST /api/v1/ack-tokens/issue); audited, by kid and nonce hash.

        ApprovalInputError names the field for an unknown approval, a closed one, a choice it does not offer or
        a subject who is not a person.
        """
        now = self.clock.now()
        approval = await self.get(approval_id=approval_id)
        if approval is None:
            raise ApprovalInputError("approval_id", "no such approval")
        if subject is not None and self.directory.person(subject) is None:
            raise ApprovalInputError("subject", f"no person named {subject!r}")
        if choice not in approval.choices:
            raise ApprovalInputError("choice", f"the approval does not offer {choice.value!r}")
        if approval.state.final:
            raise ApprovalInputError("approval_id", f"the approval is {approval.state.value} already")
        codec = self.keys.codec
        seconds = int((approval.expires_at - now).total_seconds())
        if seconds < 1:
            raise ApprovalInputError("approval_id", "the approval has run out of time")
        wanted = codec.ttl if ttl is None else max(1, int(ttl.total_seconds()))
        token = codec.issue(
            tenant=approval.tenant,
            approval_id=approval.id,
            channel=channel,
            choice=choice.value,
            delivery_id=delivery_id,
            subject=subject,
            ttl=min(wanted, seconds),
            now=int(now.timestamp()),
        )
        claims = codec.verify(token, now=int(now.timestamp()))
        await audit.record_now(
            db=self.db,
            type="token.issued",
            at=now,
            tenant=approval.tenant,
            approval_id=approval.id,
            alert_id=approval.alert_id,
            actor=by,
            actor_platform="api",
            data={**_token_details(claims), "subject": subject},
        )
        return token, claims

    async def verify_token(
        self, *, token: str, tenant: str | None = None, choice: str | None = None
    ) -> tuple[TokenClaims | None, DecisionReason | None, bool]:
        """Check a token without spending it: (claims, refusal reason or None, whether its nonce is spent)."""
        now = int(self.clock.now().timestamp())
        try:
            claims = await self.keys.verify(token, now=now, expected_tenant=tenant, expected_choice=choice)
        except TokenError as exc:
            return None, DecisionReason(exc.reason.value), False
        async with self.db.sessions() as session:
            spent = await nonce_store.is_spent(session=session, nonce=claims.nonce)
        return claims, (DecisionReason.replayed if spent else None), spent

    async def preview(self, *, token: str) -> Preview:
        """What following this web link would do, changing nothing (the confirm page: mail scanners prefetch)."""
        now = self.clock.now()
        try:
            claims = await self.keys.verify(token, now=int(now.timestamp()))
        except TokenError as exc:
            known = self.keys.authenticated_claims(token)
            refusal = await self._token_refusal(exc, known)
            return Preview(refusal=refusal, approval=refusal.approval)
        try:
            choice = Choice(claims.choice)
        except ValueError:
            refusal = DecisionResult(ok=False, reason=DecisionReason.wrong_choice, message="Not a choice ackbot knows.")
            return Preview(refusal=refusal, claims=claims)
        async with self.db.sessions() as session:
            row = await approval_store.get_row(session=session, approval_id=claims.approval_id)
            spent = await nonce_store.is_spent(session=session, nonce=claims.nonce)
        if row is None:
            refusal = DecisionResult(ok=False, reason=DecisionReason.not_found, message="No such approval.")
            return Preview(refusal=refusal, claims=claims)
        approval = approval_from_row(row)
        actor = Actor(platform="web", id=claims.subject or "")
        person = self.directory.resolve(actor) if claims.subject else None
        try:
            self._authorize(
                approval=approval, choice=choice, actor=actor, person=person, claims=claims, tenant=None, now=now
            )
        except _Refused as refusal:
            return Preview(refusal=refusal.result, approval=approval, claims=claims, person=person)
        if spent:
            refusal_result = self._result(
                DecisionReason.replayed, "This link was used already.", approval, choice, person
            )
            return Preview(refusal=refusal_result, approval=approval, claims=claims, person=person)
        return Preview(approval=approval, claims=claims, person=person, choice=choice)

    # ------------------------------------------------------------ deciding

    async def decide(
        self,
        *,
        token: str,
        actor: Actor,
        choice: str | None = None,
        tenant: str | None = None,
        answering: Mapping[str, Any] | None = None,
    ) -> DecisionResult:
        """THE decision entry point for a click: verify the token, authorize the person, decide once, resume.

        `choice` and `tenant`, when the surface knows them, must match the token's. A refusal changes nothing,
        is audited, and says why in `reason` (machine) and `message` (people). `answering`: the reference of the
        message clicked, when the surface replaces it with the decided view itself; a final decision then holds
        that message's update for it (`DecisionResult.held_update`, settled with runtime.settle_answer).
        """
        now = self.clock.now()
        answer = _Answer(message_ref=answering, holder=self._holder) if answering and self._holder else None
        try:
            claims = await self.keys.verify(
                token, now=int(now.timestamp()), expected_tenant=tenant, expected_choice=choice
            )
        except TokenError as exc:
            known = self.keys.authenticated_claims(token)
            result = await self._token_refusal(exc, known)
            await self._audit_refusal(result=result, actor=actor, claims=known, approval=result.approval, now=now)
            return result
        try:
            chosen = Choice(claims.choice)
        except ValueError:
            result = DecisionResult(ok=False, reason=DecisionReason.wrong_choice, message="Not a choice ackbot knows.")
            await self._audit_refusal(result=result, actor=actor, claims=claims, approval=None, now=now)
            return result
        if self.db.is_postgres and chosen in (Choice.acknowledge, Choice.deny):
            at_once = await self._decide_at_once(claims=claims, choice=chosen, actor=actor, now=now, answer=answer)
            if at_once is not None:
                return await self._after_decision(claims.approval_id, *at_once, now=now, answer=answer)
            if answer is not None:
                answer = _Answer(message_ref=answer.message_ref, holder=answer.holder)  # its hold was not written
        return await self._apply(
            approval_id=claims.approval_id, choice=chosen, actor=actor, claims=claims, now=now, answer=answer
        )

    async def _decide_at_once(
        self, *, claims: TokenClaims, choice: Choice, actor: Actor, now: datetime, answer: _Answer | None
    ) -> tuple[DecisionResult, list[dict[str, Any]]] | None:
        """PostgreSQL, the usual click (acknowledge or deny of an open quorum-1 approval): one read, then one
        statement that decides only if the approval is still as read and the nonce unspent, where the locked path
        (_apply) takes a transaction of eight round trips. It writes what _apply would and answers as it would.

        None, having changed nothing, for anything else (a refusal, a quorum, a race): _apply then decides, under
        the approval's lock, and says why a click is refused.
        """
        peeked = await approval_store.peek(db=self.db, approval_id=claims.approval_id, nonce=claims.nonce)
        if peeked is None:
            return None
        row, shown, spent = peeked
        if spent or row.quorum != 1 or not row.created_audited:
            return None
        try:
            person = self._authorize(
                approval=approval_from_row(row),
                choice=choice,
                actor=actor,
                person=self.directory.resolve(actor),
                claims=claims,
                tenant=None,
                now=now,
            )
        except _Refused:
            return None
        acknowledged = choice is Choice.acknowledge
        state = ApprovalState.acknowledged if acknowledged else ApprovalState.denied
        values = _final_values(state=state, choice=choice, person=person.name, channel=claims.channel, now=now)
        expected = approval_store.as_moved(row, values)
        details = _token_details(claims)
        vote = None
        if acknowledged:
            details["votes"] = 1
            vote = approval_store.vote_values(
                approval_id=row.id,
                person=person.name,
                choice=choice.value,
                actor_platform=actor.platform,
                actor_id=actor.id,
                channel=claims.channel,
                now=now,
            )
        deliveries = self._final_deliveries(expected, shown, now=now)
        if answer is not None:
            answer.hold(deliveries, now=now)
        try:
            moved = await approval_store.decide_at_once(
                db=self.db,
                seen=row,
                values=values,
                nonce=claims.nonce,
                spent_at=now,
                expires_at=claims.expires_at,
                vote=vote,
                deliveries=deliveries,
                audit=audit.row_params(
                    **_decision_audit(expected, f"approval.{state.value}", person, actor, now, details)
                ),
            )
        except IntegrityError:
            return None  # the nonce was spent by a transaction still open when the statement began: _apply says so
        if moved is None:
            return None
        decided = approval_from_row(moved)
        name = self.directory.display(person.name)
        if acknowledged:
            votes = [_vote_document(person=person.name, platform=actor.platform, channel=claims.channel, at=now)]
            return self._result(DecisionReason.decided, f"Acknowledged by {name}.", decided, choice, person, 1), votes
        return self._result(DecisionReason.decided, f"Denied by {name}.", decided, choice, person), []

    async def _token_refusal(self, exc: TokenError, claims: TokenClaims | None) -> DecisionResult:
        """The refusal for a bad token; for a genuine but stale one, say what became of its approval."""
        result = DecisionResult(ok=False, reason=DecisionReason(exc.reason.value), message=_token_message(exc))
        if claims is None or exc.reason.value not in ("expired", "retired_key"):
            return result
        approval = await self.get(approval_id=claims.approval_id)
        if approval is None or approval.tenant != claims.tenant:
            return result
        if approval.state.final:
            return _final_refusal(approval, self.directory)
        return result.model_copy(update={"approval": approval, "quorum": approval.quorum})

    async def decide_by_id(
        self, *, approval_id: str, choice: Choice | str, actor: Actor, tenant: str | None = None
    ) -> DecisionResult:
        """Decide without a token (`/ackbot ack <id>`): the same checks, the platform vouching for the person."""
        now = self.clock.now()
        try:
            chosen = Choice(choice)
        except ValueError:
            result = DecisionResult(
                ok=False,
                reason=DecisionReason.wrong_choice,
                message=f"{choice!r} is not a choice: acknowledge, deny or escalate.",
            )
            await self._audit_refusal(result=result, actor=actor, claims=None, approval=None, now=now)
            return result
        return await self._apply(
            approval_id=approval_id, choice=chosen, actor=actor, claims=None, now=now, tenant=tenant
        )

    async def cancel(self, *, approval_id: str, by: str, tenant: str | None = None) -> DecisionResult:
        """Withdraw an open approval: its messages are updated and the callback says cancelled."""
        now = self.clock.now()
        actor = Actor(platform="api", id=by)
        try:
            async with self.db.transaction() as session:
                row = await approval_store.get_row(session=session, approval_id=approval_id, lock=True)
                if row is None or (tenant is not None and row.tenant != tenant):
                    raise _Refused(
                        DecisionResult(ok=False, reason=DecisionReason.not_found, message="No such approval.")
                    )
                approval = approval_from_row(row)
                if approval.state.final:
                    raise _Refused(_final_refusal(approval, self.directory))
                updated = await self._finish(
                    session, row, state=ApprovalState.cancelled, choice=None, person=by, channel="api", now=now
                )
                await self._audit_transition(
                    session, updated, "approval.cancelled", at=now, actor=by, actor_platform="api"
                )
                result = DecisionResult(
                    ok=True,
                    reason=DecisionReason.cancelled,
                    message=f"Cancelled by {by}.",
                    approval=approval_from_row(updated),
                    quorum=updated.quorum,
                )
        except _Refused as refusal:
            await self._audit_refusal(result=refusal.result, actor=actor, claims=None, approval=None, now=now)
            return refusal.result
        self._committed(approval_id)
        return result

    async def _apply(
        self,
        *,
        approval_id: str,
        choice: Choice,
        actor: Actor,
        claims: TokenClaims | None,
        now: datetime,
        tenant: str | None = None,
        answer: _Answer | None = None,
    ) -> DecisionResult:
        person = self.directory.resolve(actor)
        approval: Approval | None = None
        # The votes as this transaction leaves them, when it knows them: the long polls get the view without a read.
        votes: list[dict[str, Any]] | None = None
        try:
            async with self.db.transaction() as session:
                # The row lock queues concurrent decisions on one approval; the conditional update stays the guard.
                # A token's nonce is spent with the lock (one statement on PostgreSQL); a refusal below rolls that
                # back, and a replay is told apart only once the click is otherwise allowed.
                if claims is not None:
                    row, spent = await approval_store.lock_and_spend(
                        session=session,
                        db=self.db,
                        approval_id=approval_id,
                        nonce=claims.nonce,
                        now=now,
                        expires_at=claims.expires_at,
                    )
                else:
                    row = await approval_store.get_row(session=session, approval_id=approval_id, lock=True)
                    spent = True
                if row is None:
                    raise _Refused(
                        DecisionResult(ok=False, reason=DecisionReason.not_found, message="No such approval.")
                    )
                approval = approval_from_row(row)
                person = self._authorize(
                    approval=approval, choice=choice, actor=actor, person=person, claims=claims, tenant=tenant, now=now
                )
                if not spent:
                    raise _Refused(
                        self._result(
                            DecisionReason.replayed,
                            "This button or link was used already.",
                            approval,
                            choice,
                            person,
                        )
                    )
                channel = claims.channel if claims is not None else actor.platform
                details = _token_details(claims)
                if choice is Choice.escalate:
                    result = await self._escalate_by(
                        session, row, person=person, channel=channel, now=now, details=details
                    )
                elif choice is Choice.acknowledge:
                    result, votes = await self._acknowledge(
                        session,
                        row,
                        person=person,
                        actor=actor,
                        channel=channel,
                        now=now,
                        details=details,
                        answer=answer,
                    )
                else:
                    updated = await self._finish(
                        session,
                        row,
                        state=ApprovalState.denied,
                        choice=choice,
                        person=person.name,
                        channel=channel,
                        now=now,
                        answer=answer,
                    )
                    await self._audit_decision(session, updated, "approval.denied", person, actor, now, details)
                    votes = [] if updated.quorum == 1 else None  # no acknowledgement toward a quorum of one is kept
                    result = self._result(
                        DecisionReason.decided,
                        f"Denied by {self.directory.display(person.name)}.",
                        approval_from_row(updated),
                        choice,
                        person,
                    )
        except _Refused as refusal:
            await self._audit_refusal(
                result=refusal.result, actor=actor, claims=claims, approval=approval, now=now, person=person
            )
            return refusal.result
        return await self._after_decision(approval_id, result, votes, now=now, answer=answer)

    async def _after_decision(
        self,
        approval_id: str,
        result: DecisionResult,
        votes: list[dict[str, Any]] | None,
        *,
        now: datetime,
        answer: _Answer | None = None,
    ) -> DecisionResult:
        # After the commit: the long polls get the decided view (votes: as the decision left them, if known), the
        # outbox is woken unless all the decision queued is held for the surface's answer, and the approval's
        # alert is marked acknowledged.
        decided = result.approval
        view = None
        if decided is not None and decided.state.final and votes is not None:
            view = ApprovalView.model_validate({"approval": decided, "votes": votes, "next_due_at": None})
        self._committed(approval_id, view, queued=answer is None or answer.others)
        if answer is not None and answer.held is not None:
            result = result.holding(answer.held)
        if decided is not None and decided.state is ApprovalState.acknowledged and decided.alert_id:
            # Its own transaction: a decision that also locked the alert row could deadlock against an ingest
            # batch (which locks alert rows and the audit head in event order). The approval is what counts.
            try:
                async with self.db.single_statements() as session:
                    await alert_store.mark_acknowledged(
                        session=session, alert_id=decided.alert_id, by=decided.decided_by or "", at=now
                    )
            except Exception:
                log.exception("approval %s: could not mark alert %s acknowledged", approval_id, decided.alert_id)
        return result

    def _result(
        self,
        reason: DecisionReason,
        message: str,
        approval: Approval | None,
        choice: Choice | None,
        person: Person | None,
        votes: int = 0,
    ) -> DecisionResult:
        return DecisionResult(
            ok=reason in (DecisionReason.decided, DecisionReason.vote_recorded, DecisionReason.escalated),
            reason=reason,
            message=message,
            approval=approval,
            choice=choice,
            person=person.name if person else None,
            votes=votes,
            quorum=approval.quorum if approval else 1,
        )

    def _authorize(
        self,
        *,
        approval: Approval,
        choice: Choice,
        actor: Actor,
        person: Person | None,
        claims: TokenClaims | None,
        tenant: str | None,
        now: datetime,
    ) -> Person:
        def refuse(reason: DecisionReason, message: str) -> _Refused:
            return _Refused(self._result(reason, message, approval, choice, person))

        wrong_tenant = (claims is not None and claims.tenant != approval.tenant) or (
            tenant is not None and tenant != approval.tenant
        )
        if wrong_tenant:
            raise refuse(DecisionReason.wrong_tenant, "This token belongs to another tenant.")
        if choice not in approval.choices:
            raise refuse(DecisionReason.wrong_choice, f"{choice.value!r} is not one of this approval's choices.")
        if claims is not None and actor.platform in CLICK_PLATFORM.values():
            # A token is bound to the channel it was sent on: a Slack button comes back from Slack.
            sent_on = CLICK_PLATFORM.get(self._channel_types().get(claims.channel, ""))
            if sent_on is not None and sent_on != actor.platform:
                raise refuse(DecisionReason.wrong_channel, "This button belongs to a message on another platform.")
        if approval.state.final:
            refusal = _final_refusal(approval, self.directory)
            raise refuse(refusal.reason, refusal.message)
        if now >= approval.expires_at:
            raise refuse(DecisionReason.expired, f"This approval expired at {_when(approval.expires_at)}.")
        if actor.platform == "web" and (claims is None or claims.subject is None):
            raise refuse(
                DecisionReason.no_subject,
                "This link was not sent to a particular person, so it cannot record who decided. "
                "Use the buttons in chat, or have the request sent to you (person:NAME).",
            )
        if person is None:
            raise refuse(
                DecisionReason.unknown_actor,
                f"ackbot does not know who you are ({actor.platform} id {actor.id}); "
                "an administrator can add your identity to people in the configuration.",
            )
        if claims is not None and claims.subject is not None and claims.subject != person.name:
            raise refuse(DecisionReason.wrong_subject, "This link was sent to someone else.")
        if not self.directory.may_decide(person, approval.approvers):
            raise refuse(
                DecisionReason.not_approver,
                f"{self.directory.display(person.name)} is not an approver of this request.",
            )
        if choice is Choice.acknowledge and not approval.allow_self_approval:
            if self.directory.is_requester(person, approval.requester):
                raise refuse(DecisionReason.self_approval, "You asked for this; someone else has to approve it.")
        if choice is Choice.escalate and approval.escalation_level >= len(approval.escalation):
            raise refuse(DecisionReason.cannot_escalate, "There is nobody left to escalate to.")
        return person

    async def _acknowledge(
        self,
        session: AsyncSession,
        row: ApprovalRecord,
        *,
        person: Person,
        actor: Actor,
        channel: str,
        now: datetime,
        details: dict[str, Any],
        answer: _Answer | None = None,
    ) -> tuple[DecisionResult, list[dict[str, Any]]]:
        """Record an acknowledgement; decide when it reaches the quorum. Also returns the approval's votes."""
        approval = approval_from_row(row)
        vote = approval_store.vote_values(
            approval_id=row.id,
            person=person.name,
            choice=Choice.acknowledge.value,
            actor_platform=actor.platform,
            actor_id=actor.id,
            channel=channel,
            now=now,
        )
        added = await approval_store.add_vote(session=session, db=self.db, vote=vote)
        if added and row.quorum == 1:
            # A vote that reaches the quorum decides in its own transaction, so an open quorum-1 approval has no
            # votes: this one is the only one, and nothing needs counting.
            votes = [_vote_document(person=person.name, platform=actor.platform, channel=channel, at=now)]
        else:
            votes = await approval_store.votes(session=session, approval_id=row.id)
        count = sum(1 for vote in votes if vote["choice"] == Choice.acknowledge.value)
        if not added:
            raise _Refused(
                self._result(
                    DecisionReason.already_voted,
                    f"You acknowledged already; {row.quorum - count} more acknowledgement(s) needed.",
                    approval,
                    Choice.acknowledge,
                    person,
                    count,
                )
            )
        if count < row.quorum:
            # Every message shows the count and gets fresh buttons (the clicked one's nonce is spent).
            await self._enqueue_updates(session, row, now=now, stage=f"vote{count}")
            await self._audit_decision(session, row, "approval.vote", person, actor, now, {**details, "votes": count})
            result = self._result(
                DecisionReason.vote_recorded,
                f"Acknowledgement recorded: {count} of {row.quorum}.",
                approval,
                Choice.acknowledge,
                person,
                count,
            )
            return result, votes
        updated = await self._finish(
            session,
            row,
            state=ApprovalState.acknowledged,
            choice=Choice.acknowledge,
            person=person.name,
            channel=channel,
            now=now,
            answer=answer,
        )
        await self._audit_decision(
            session, updated, "approval.acknowledged", person, actor, now, {**details, "votes": count}
        )
        result = self._result(
            DecisionReason.decided,
            f"Acknowledged by {self.directory.display(person.name)}.",
            approval_from_row(updated),
            Choice.acknowledge,
            person,
            count,
        )
        return result, votes

    async def _escalate_by(
        self,
        session: AsyncSession,
        row: ApprovalRecord,
        *,
        person: Person,
        channel: str,
        now: datetime,
        details: dict[str, Any],
    ) -> DecisionResult:
        updated = await self._fire_step(session, row, now=now, by=person.name)
        if updated is None:
            raise _Refused(
                self._result(
                    DecisionReason.already_decided,
                    "Someone else changed this approval at the same moment.",
                    approval_from_row(row),
                    Choice.escalate,
                    person,
                )
            )
        await self._audit_transition(
            session,
            updated,
            "approval.escalated",
            at=now,
            actor=person.name,
            actor_platform=channel,
            data={**details, "level": updated.escalation_level},
        )
        return self._result(
            DecisionReason.escalated,
            f"Escalated by {self.directory.display(person.name)}.",
            approval_from_row(updated),
            Choice.escalate,
            person,
        )

    # ------------------------------------------------------------ transitions and what they cause

    async def _finish(
        self,
        session: AsyncSession,
        row: ApprovalRecord,
        *,
        state: ApprovalState,
        choice: Choice | None,
        person: str | None,
        channel: str | None,
        now: datetime,
        answer: _Answer | None = None,
    ) -> ApprovalRecord:
        updated = await approval_store.transition(
            session=session,
            approval_id=row.id,
            values=_final_values(state=state, choice=choice, person=person, channel=channel, now=now),
        )
        if updated is None:
            current = await approval_store.get_row(session=session, approval_id=row.id)
            refusal = _final_refusal(approval_from_row(current or row), self.directory)
            raise _Refused(refusal)
        await self._resume(session, updated, now=now, answer=answer)
        return updated

    async def _resume(
        self, session: AsyncSession, row: ApprovalRecord, *, now: datetime, answer: _Answer | None = None
    ) -> None:
        """A final state: update every message, queue the signed callback and the rule's follow-ups."""
        shown = await approval_store.shown_on(session=session, approval_id=row.id)
        deliveries = self._final_deliveries(row, shown, now=now)
        if answer is not None:
            answer.hold(deliveries, now=now)
        await insert_deliveries(session=session, rows=deliveries)

    def _final_deliveries(
        self, row: ApprovalRecord, shown: approval_store.Shown, *, now: datetime
    ) -> list[dict[str, Any]]:
        """What a final state queues: an update of every message that shows it, the callback, the follow-ups."""
        state = ApprovalState(row.state)
        rows = self._update_rows(row, shown, now=now, stage=state.value)
        if row.callback_url:
            body = {
                "approval_id": row.id,
                "tenant": row.tenant,
                "state": state.value,
                "decided_by": row.decided_by,
                "decided_at": row.decided_at.isoformat() if row.decided_at else None,
                "channel": row.decision_channel,
                "choice": row.decided_choice,
                "context": row.context,
            }
            rows.append(
                delivery_values(
                    tenant=row.tenant,
                    channel=CALLBACK_CHANNEL,
                    idempotency_key=_key("approval", row.id, "callback", state.value),
                    now=now,
                    purpose=DeliveryPurpose.callback,
                    approval_id=row.id,
                    alert_id=row.alert_id,
                    event_id=row.event_id,
                    extra={"url": row.callback_url, "body": body},
                )
            )
        hook = FOLLOW_UP_HOOKS.get(state)
        if hook is not None:
            rows += self._follow_ups(row, hook=hook, now=now, stage=state.value)
        return rows

    async def _enqueue_updates(self, session: AsyncSession, row: ApprovalRecord, *, now: datetime, stage: str) -> int:
        shown = await approval_store.shown_on(session=session, approval_id=row.id)
        await insert_deliveries(session=session, rows=self._update_rows(row, shown, now=now, stage=stage))
        return len(shown)

    @staticmethod
    def _update_rows(
        row: ApprovalRecord, shown: approval_store.Shown, *, now: datetime, stage: str
    ) -> list[dict[str, Any]]:
        updates = []
        for channel, target, extra, message_ref in shown:
            person = extra.get("person")
            update_extra: dict[str, Any] = {"person": person} if person else {}
            if message_ref is not None:
                # What the update edits, known now: the dispatcher need not look it up again.
                update_extra["message_ref"] = message_ref
            updates.append(
                delivery_values(
                    tenant=row.tenant,
                    channel=channel,
                    idempotency_key=_key("approval", row.id, "update", stage, channel, target or ""),
                    now=now,
                    purpose=DeliveryPurpose.update,
                    event_id=row.event_id,
                    alert_id=row.alert_id,
                    approval_id=row.id,
                    rule=row.rule,
                    target=target,
                    extra=update_extra or None,
                )
            )
        return updates

    def _follow_ups(self, row: ApprovalRecord, *, hook: str, now: datetime, stage: str) -> list[dict[str, Any]]:
        if not row.rule:
            return []
        rule = next((r for r in self._rules() if r.name == row.rule), None)
        if rule is None:
            log.warning("approval %s: rule %s is gone; its %s actions are skipped", row.id, row.rule, hook)
            return []
        known = self._channel_types()
        rows = []
        for index, action in enumerate(getattr(rule, hook)):
            if action.channel not in known:
                log.warning("rule %s %s: channel %s is not configured; skipped", rule.name, hook, action.channel)
                continue
            rows.append(
                delivery_values(
                    tenant=row.tenant,
                    channel=action.channel,
                    idempotency_key=_key("approval", row.id, hook, stage, index),
                    now=now,
                    purpose=DeliveryPurpose.notify,
                    event_id=row.event_id,
                    alert_id=row.alert_id,
                    approval_id=row.id,
                    rule=rule.name,
                    action_index=index,
                    extra={"follow_up": hook},
                )
            )
        return rows

    async def _fire_step(
        self, session: AsyncSession, row: ApprovalRecord, *, now: datetime, by: str
    ) -> ApprovalRecord | None:
        """Run the next escalation step: widen the approvers, message the step's targets, update the others."""
        steps = [EscalationStep.model_validate(s) for s in row.escalation]
        level = row.escalation_level
        step = steps[level]
        approvers = [*row.approvers, *(a for a in step.approvers if a not in row.approvers)]
        targets = [*row.targets, *(t for t in step.targets if t not in row.targets)]
        updated = await approval_store.transition(
            session=session,
            approval_id=row.id,
            from_level=level,
            values={
                "state": ApprovalState.escalated.value,
                "escalation_level": level + 1,
                "approvers": approvers,
                "targets": targets,
                "next_due_at": next_due(
                    created_at=row.created_at, expires_at=row.expires_at, steps=steps, level=level + 1
                ),
                "updated_at": now,
            },
        )
        if updated is None:
            return None
        stage = f"level{level + 1}"
        existing = await self._notified(session, row.id)
        await self._enqueue_updates(session, updated, now=now, stage=stage)
        for plan in self._plan_quietly(step.targets, row.id):
            # A conversation that shows the approval already gets the update above, not a second message.
            if (plan.channel, plan.target) not in existing:
                session.add(self._notify_delivery(updated, plan, stage=stage, now=now))
        await insert_deliveries(
            session=session, rows=self._follow_ups(updated, hook="on_escalate", now=now, stage=stage)
        )
        log.info("approval %s escalated to level %d by %s", row.id, level + 1, by)
        return updated

    @staticmethod
    async def _notified(session: AsyncSession, approval_id: str) -> set[tuple[str, str | None]]:
        rows = await session.execute(
            select(DeliveryRow.channel, DeliveryRow.target, DeliveryRow.extra).where(
                DeliveryRow.approval_id == approval_id, DeliveryRow.purpose == DeliveryPurpose.notify
            )
        )
        return {(c, t) for c, t, extra in rows.all() if not (extra or {}).get("follow_up")}

    # ------------------------------------------------------------ the scheduler

    async def run_once(self, *, limit: int = SCHEDULER_BATCH) -> int:
        """Fire every due escalation step and expiry once; returns how many approvals this call advanced.

        Safe on any number of replicas at once: each approval is taken with a row lock (SKIP LOCKED on
        PostgreSQL) and moved with a conditional update on its escalation level and due time.
        """
        now = self.clock.now()
        async with self.db.transaction() as session:
            await self._audit_creation(session)
        async with self.db.transaction() as session:
            candidates = await approval_store.due_ids(session=session, db=self.db, now=now, limit=limit)
        advanced = 0
        for approval_id in candidates:
            try:
                if await self._advance(approval_id, now):
                    advanced += 1
                    self._committed(approval_id)
            except Exception:
                log.exception("approval %s: the scheduled step failed; it stays due", approval_id)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            # Past exp plus the skew any replica allows, a token is refused as expired: its nonce can go.
            await nonce_store.prune(db=self.db, before=now - timedelta(seconds=CLOCK_SKEW_SECONDS))
            self._pruned_at = now
        return advanced

    async def _advance(self, approval_id: str, now: datetime) -> bool:
        async with self.db.transaction() as session:
            row = await approval_store.lock_if_due(session=session, db=self.db, approval_id=approval_id, now=now)
            if row is None:
                return False  # another replica has it, or got there first
            steps = [EscalationStep.model_validate(s) for s in row.escalation]
            level = row.escalation_level
            updated: ApprovalRecord | None
            if now >= row.expires_at:
                updated = await approval_store.transition(
                    session=session,
                    approval_id=row.id,
                    from_level=level,
                    from_due=row.next_due_at,
                    check_due=True,
                    values={
                        "state": ApprovalState.expired.value,
                        "decided_at": now,
                        "next_due_at": None,
                        "updated_at": now,
                    },
                )
                if updated is None:
                    return False
                await self._resume(session, updated, now=now)
                kind, data = "approval.expired", {"level": level}
            elif level < len(steps) and row.created_at + steps[level].after <= now:
                updated = await self._fire_step(session, row, now=now, by="the scheduler")
                if updated is None:
                    return False
                kind, data = "approval.escalated", {"level": updated.escalation_level, "timeout": True}
            else:
                # The due time was early (the row was edited by hand, say): set it right and move on.
                await approval_store.transition(
                    session=session,
                    approval_id=row.id,
                    values={
                        "next_due_at": next_due(
                            created_at=row.created_at, expires_at=row.expires_at, steps=steps, level=level
                        )
                    },
                )
                return False
            await self._audit_transition(
                session, updated, kind, at=now, actor="scheduler", actor_platform="ackbot", data=data
            )
        return True

    # ------------------------------------------------------------ audit

    async def _audit_decision(
        self,
        session: AsyncSession,
        row: ApprovalRecord,
        kind: str,
        person: Person,
        actor: Actor,
        now: datetime,
        details: dict[str, Any],
    ) -> None:
        await self._audit_creation(session, row=row)
        await audit.record(session=session, db=self.db, **_decision_audit(row, kind, person, actor, now, details))

    async def _audit_transition(
        self,
        session: AsyncSession,
        row: ApprovalRecord,
        kind: str,
        *,
        at: datetime,
        actor: str,
        actor_platform: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Audit what just happened to an approval (after its deferred creation row, if still unwritten)."""
        await self._audit_creation(session, row=row)
        await audit.record(
            session=session,
            db=self.db,
            type=kind,
            at=at,
            tenant=row.tenant,
            approval_id=row.id,
            alert_id=row.alert_id,
            actor=actor,
            actor_platform=actor_platform,
            data=data,
        )

    async def _audit_refusal(
        self,
        *,
        result: DecisionResult,
        actor: Actor,
        claims: TokenClaims | None,
        approval: Approval | None,
        now: datetime,
        person: Person | None = None,
    ) -> None:
        approval_id = approval.id if approval else (claims.approval_id if claims else None)
        tenant = approval.tenant if approval else (claims.tenant if claims else None)
        try:
            async with self.db.transaction() as session:
                if approval_id is not None:
                    await self._audit_creation(session, approval_id=approval_id)
                await audit.record(
                    session=session,
                    db=self.db,
                    type="decision.refused",
                    at=now,
                    tenant=tenant,
                    approval_id=approval_id,
                    alert_id=approval.alert_id if approval else None,
                    actor=person.name if person else f"{actor.platform}:{actor.id}"[:200],
                    actor_platform=actor.platform,
                    data={**_token_details(claims), "reason": result.reason.value, "actor_id": actor.id[:200]},
                )
        except Exception:
            # The refusal stands even if it cannot be written down; say so loudly.
            log.exception("could not audit a refused decision (%s)", result.reason.value)


def _final_values(
    *, state: ApprovalState, choice: Choice | None, person: str | None, channel: str | None, now: datetime
) -> dict[str, Any]:
    """The approval's columns as a final state leaves them (approval_store.DECISION_KEYS)."""
    return {
        "state": state.value,
        "decided_at": now,
        "decided_by": person,
        "decided_choice": choice.value if choice else None,
        "decision_channel": channel,
        "next_due_at": None,
        "updated_at": now,
    }


def _decision_audit(
    row: ApprovalRecord, kind: str, person: Person, actor: Actor, now: datetime, details: dict[str, Any]
) -> dict[str, Any]:
    """The audit row of a decision or vote by person on the approval as `row` leaves it (audit.record's fields)."""
    return {
        "type": kind,
        "at": now,
        "tenant": row.tenant,
        "approval_id": row.id,
        "alert_id": row.alert_id,
        "actor": person.name,
        "actor_platform": actor.platform,
        "data": {**details, "actor_id": actor.id, "state": row.state},
    }


def _vote_document(*, person: str, platform: str, channel: str | None, at: datetime) -> dict[str, Any]:
    """One acknowledgement as approval_store.votes lists it."""
    return {
        "person": person,
        "choice": Choice.acknowledge.value,
        "platform": platform,
        "channel": channel,
        "at": at.isoformat(),
    }


def _token_details(claims: TokenClaims | None) -> dict[str, Any]:
    if claims is None:
        return {}
    return {
        "choice": claims.choice,
        "channel": claims.channel,
        "delivery_id": claims.delivery_id,
        "kid": claims.kid,
        "nonce_hash": audit.nonce_digest(claims.nonce),
    }


def _token_message(exc: TokenError) -> str:
    reason = exc.reason.value
    if reason == "expired":
        return "This button or link has expired."
    if reason == "retired_key":
        return "This button or link was revoked (its signing key has been retired)."
    if reason in ("wrong_tenant", "wrong_choice"):
        return "This button or link does not belong here."
    return "This button or link is not valid."


def _final_refusal(approval: Approval, directory: Directory) -> DecisionResult:
    state = approval.state
    if state is ApprovalState.expired:
        return DecisionResult(
            ok=False,
            reason=DecisionReason.expired,
            message=f"This approval expired at {_when(approval.decided_at or approval.expires_at)} without a decision.",
            approval=approval,
            quorum=approval.quorum,
        )
    who = directory.display(approval.decided_by) or "someone"
    return DecisionResult(
        ok=False,
        reason=DecisionReason.already_decided,
        message=f"Already {state.value} by {who} at {_when(approval.decided_at)}.",
        approval=approval,
        quorum=approval.quorum,
    )
