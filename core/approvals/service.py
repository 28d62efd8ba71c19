"""The approvals face every surface calls: open, read, decide (the one entry point of every click and command),
cancel, preview. Small on purpose: verify the token, ask the decision machine (machine.py) through the store,
which reads the approval, plans and writes the plan exactly once (core/store/approvals.py), then wake the waiters.

Every change is one write that also holds what it causes (durable before acknowledged): the message updates, the
signed callback and the rule's follow-up actions are outbox deliveries written with the decision, and its audit
rows are appended in the same write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.approvals import machine, opening
from core.approvals.buttons import Buttons
from core.approvals.callback import CallbackChannel
from core.approvals.directory import Directory
from core.approvals.keys import KeyManager
from core.approvals.models import ApprovalRequest, ApprovalView, DecisionReason, DecisionResult
from core.approvals.plans import Intent, IntentKind, Plan, Policy, Snapshot
from core.approvals.scheduler import Scheduler
from core.approvals.targets import TargetPlan, plan_targets
from core.approvals.waiters import Waiters
from core.channels.base import ChannelContext
from core.clock import Clock
from core.config import AckbotConfig
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.deliveries import HeldUpdate
from core.models.events import Alert, Event
from core.models.people import Actor, Person
from core.models.rules import Action, Rule
from core.store import alerts as alert_store
from core.store import approvals as approval_store
from core.store.approvals import Applied, approval_from_row
from core.store.db import Database
from core.tokens import TokenClaims, TokenError

log = logging.getLogger("ackbot.approvals")

# How many open approvals `list_pending_for` looks through before filtering by approver.
PENDING_SCAN = 500


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
        channel_tenants: Callable[[], Mapping[str, str]] = dict,
        on_commit: Callable[[], None] | None = None,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.keys = KeyManager(db=db, config=config)
        self.directory = Directory(config.people, config.groups)
        self.policy = Policy(
            directory=self.directory, channel_types=channel_types, rules=rules, channel_tenants=channel_tenants
        )
        self._on_commit = on_commit
        # The outbox worker that a clicked message's update is held under for the click's answer (None: never held).
        self._holder = holder
        self.waiters = Waiters(db=db)
        self.tokens = Buttons(db=db, clock=clock, keys=self.keys, directory=self.directory, public_url=public_url)
        self.scheduler = Scheduler(
            db=db,
            clock=clock,
            keys=self.keys,
            policy=self.policy,
            interval=config.approvals.scheduler_interval,
            changed=self._changed,
        )
        self._tasks: list[asyncio.Task[None]] = []
        # The dispatcher's prefetcher and enricher, and the buttons of a message.
        self.prefetch = self.tokens.prefetch
        self.enrich = self.tokens.enrich
        self.buttons = self.tokens.buttons
        self.verify_token = self.tokens.verify_token
        self.run_once = self.scheduler.run_once

    # ------------------------------------------------------------ life cycle

    async def start(self, *, run_scheduler: bool = True) -> None:
        """Load (or generate) the keys and start the scheduler loop; due work from before a restart fires then."""
        await self.keys.load(now=self.clock.now())
        if run_scheduler:
            self._tasks.append(asyncio.create_task(self.scheduler.loop(), name="ackbot-approvals-scheduler"))
            self._tasks.append(asyncio.create_task(self.scheduler.key_loop(), name="ackbot-approvals-keys"))

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
        """Answer every waiting long poll now with the approval as it stands (the process is shutting down)."""
        self.waiters.release()

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

    def _changed(self, approval_id: str, view: ApprovalView | None = None, *, queued: bool = True) -> None:
        # After a write that changed the approval: wake its long polls, and the outbox if it has work.
        self.waiters.changed(approval_id, view)
        if queued and self._on_commit is not None:
            self._on_commit()

    # ------------------------------------------------------------ opening

    def plan_targets(self, targets: Sequence[str], *, field: str = "targets") -> list[TargetPlan]:
        """Resolve targets to messages (see targets.plan_targets); ApprovalInputError names the field."""
        return plan_targets(self.directory, self.policy.channel_types(), targets, field=field)

    async def create(self, *, request: ApprovalRequest, tenant: str, created_by: str | None = None) -> Approval:
        """Open an approval and queue one message per target, in one transaction; ApprovalInputError names a field."""
        approval = await opening.create(
            db=self.db, policy=self.policy, request=request, tenant=tenant, created_by=created_by, now=self.clock.now()
        )
        self._changed(approval.id)
        return approval

    async def open_for_action(
        self, session: AsyncSession, event: Event, alert: Alert | None, rule: Rule, action: Action
    ) -> str:
        """The ingest hook: open the approval a rule action asks for, inside the ingest transaction (see
        opening.open_for_action)."""
        return await opening.open_for_action(
            session=session,
            directory=self.directory,
            event=event,
            alert=alert,
            rule=rule,
            action=action,
            now=self.clock.now(),
        )

    # ------------------------------------------------------------ reading

    async def get(self, *, approval_id: str) -> Approval | None:
        """One approval."""
        async with self.db.read() as session:
            return await approval_store.get(session=session, approval_id=approval_id)

    async def view(self, *, approval_id: str) -> ApprovalView | None:
        """One approval with its votes and next due time, as the API shows it."""
        async with self.db.read() as session:
            row = await approval_store.get_row(session=session, approval_id=approval_id)
            if row is None:
                return None
            # Votes exist only toward a quorum above one, or as the one acknowledgement that decided: a vote that
            # reaches the quorum decides in the same write, so an open quorum-1 approval has none to read.
            may_have_votes = row.quorum > 1 or row.state == ApprovalState.acknowledged.value
            votes = await approval_store.votes(session=session, approval_id=approval_id) if may_have_votes else []
            return ApprovalView(approval=approval_from_row(row), votes=votes, next_due_at=row.next_due_at)

    async def wait(
        self, *, approval_id: str, seconds: float, check: Callable[[ApprovalView], object] | None = None
    ) -> ApprovalView | None:
        """The approval once it is final, or as it is after `seconds` (at most 60): a long poll (see Waiters)."""
        return await self.waiters.wait(
            approval_id=approval_id, seconds=seconds, read=lambda: self.view(approval_id=approval_id), check=check
        )

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
        async with self.db.read() as session:
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
        """Issue one token for an open approval (POST /api/v1/ack-tokens/issue); see Buttons.issue_token."""
        return await self.tokens.issue_token(
            approval=await self.get(approval_id=approval_id),
            channel=channel,
            choice=choice,
            by=by,
            delivery_id=delivery_id,
            subject=subject,
            ttl=ttl,
        )

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
        intent = await self._click(token, actor, now, expected_tenant=tenant, expected_choice=choice)
        if answering and intent.kind is IntentKind.click:
            intent = replace(intent, answering=answering, holder=self._holder)
        return await self._decide(intent, now=now)

    async def decide_by_id(
        self, *, approval_id: str, choice: Choice | str, actor: Actor, tenant: str | None = None
    ) -> DecisionResult:
        """Decide without a token (`/ackbot ack <id>`): the same checks, the platform vouching for the person."""
        raw = choice.value if isinstance(choice, Choice) else choice
        intent = Intent(kind=IntentKind.command, actor=actor, choice=raw, tenant=tenant)
        return await self._decide(intent, now=self.clock.now(), approval_id=approval_id)

    async def cancel(self, *, approval_id: str, by: str, tenant: str | None = None) -> DecisionResult:
        """Withdraw an open approval: its messages are updated and the callback says cancelled."""
        intent = Intent(kind=IntentKind.cancel, actor=Actor(platform="api", id=by), tenant=tenant)
        return await self._decide(intent, now=self.clock.now(), approval_id=approval_id)

    async def preview(self, *, token: str) -> Preview:
        """What following this web link would do, changing nothing (the confirm page: mail scanners prefetch)."""
        now = self.clock.now()
        intent = await self._click(token, None, now)
        claims = intent.claims
        async with self.db.read() as session:
            snapshot = (
                await approval_store.snapshot(session=session, approval_id=claims.approval_id, nonce=claims.nonce)
                if claims is not None
                else None
            )
        result = machine.decide(snapshot, intent, now=now, policy=self.policy).result
        person = self.directory.resolve(intent.actor) if claims is not None and claims.subject else None
        if intent.kind is IntentKind.bad_token:
            return Preview(refusal=result, approval=result.approval)
        if not result.ok:
            if result.reason is DecisionReason.replayed:
                result = result.model_copy(update={"message": "This link was used already."})
            return Preview(refusal=result, approval=result.approval, claims=claims, person=person)
        assert snapshot is not None
        return Preview(approval=snapshot.approval, claims=claims, person=person, choice=result.choice)

    async def _click(
        self,
        token: str,
        actor: Actor | None,
        now: datetime,
        *,
        expected_tenant: str | None = None,
        expected_choice: str | None = None,
    ) -> Intent:
        # The intent of a token: a click, or (it did not verify) a bad token carrying its refusal. A web link's
        # preview (actor None) is asked as the person the link was sent to.
        try:
            claims = await self.keys.verify(
                token, now=int(now.timestamp()), expected_tenant=expected_tenant, expected_choice=expected_choice
            )
        except TokenError as exc:
            known = self.keys.authenticated_claims(token)
            refusal = DecisionResult(ok=False, reason=DecisionReason(exc.reason.value), message=_token_message(exc))
            stale = exc.reason.value in ("expired", "retired_key")
            who = actor or Actor(platform="web", id=known.subject or "" if known else "")
            return Intent(kind=IntentKind.bad_token, actor=who, claims=known, refusal=refusal, stale=stale)
        who = actor or Actor(platform="web", id=claims.subject or "")
        return Intent(kind=IntentKind.click, actor=who, choice=claims.choice, claims=claims)

    async def _decide(self, intent: Intent, *, now: datetime, approval_id: str | None = None) -> DecisionResult:
        claims = intent.claims
        if approval_id is None and claims is not None:
            approval_id = claims.approval_id
        planned: list[Plan] = []

        def plan(snapshot: Snapshot | None) -> Plan:
            planned.append(machine.decide(snapshot, intent, now=now, policy=self.policy))
            return planned[-1]

        nonce = claims.nonce if claims is not None and intent.kind is IntentKind.click else None
        try:
            applied = await approval_store.decide(db=self.db, approval_id=approval_id, nonce=nonce, now=now, plan=plan)
        except Exception:
            if not planned or not planned[-1].refused:
                raise
            # The refusal stands even if it cannot be written down; say so loudly.
            log.exception("could not audit a refused decision (%s)", planned[-1].result.reason.value)
            return planned[-1].result
        assert applied is not None
        return await self._after(applied, now=now)

    async def _after(self, applied: Applied, *, now: datetime) -> DecisionResult:
        # After the write: the long polls get the decided view, the outbox is woken unless all the decision queued
        # is held for the surface's answer, and an acknowledged approval's alert is marked acknowledged.
        plan = applied.plan
        result = plan.result
        for warning in plan.warnings:
            log.warning("approval %s: %s", plan.approval_id, warning)
        decided = result.approval
        if plan.refused or decided is None:
            return result
        view = None
        if decided.state.final and plan.votes is not None:
            view = ApprovalView.model_validate({"approval": decided, "votes": plan.votes, "next_due_at": None})
        self._changed(decided.id, view, queued=plan.wakes_outbox)
        for queued, delivery_id in zip(plan.deliveries, applied.delivery_ids, strict=True):
            if queued.held_by is not None:
                ref = dict((queued.extra or {})["message_ref"])
                result = result.holding(HeldUpdate(delivery_id, queued.channel, ref, now))
        if decided.state is ApprovalState.acknowledged and decided.alert_id:
            # Its own statement: a decision that also locked the alert row could deadlock against an ingest batch
            # (which locks alert rows and the audit head in event order). The approval is what counts.
            try:
                async with self.db.transaction(autocommit=True) as session:
                    await alert_store.mark_acknowledged(
                        session=session, alert_id=decided.alert_id, by=decided.decided_by or "", at=now
                    )
            except Exception:
                log.exception("approval %s: could not mark alert %s acknowledged", decided.id, decided.alert_id)
        return result


def _token_message(exc: TokenError) -> str:
    reason = exc.reason.value
    if reason == "expired":
        return "This button or link has expired."
    if reason == "retired_key":
        return "This button or link was revoked (its signing key has been retired)."
    if reason in ("wrong_tenant", "wrong_choice"):
        return "This button or link does not belong here."
    return "This button or link is not valid."
