"""Tokens and buttons: the signed, expiring, single-use tokens behind every Acknowledge / Deny / Escalate, for
the dispatcher's messages (one per choice, bound to the delivery and channel) and for the API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.approvals.directory import Directory
from core.approvals.keys import KeyManager
from core.approvals.machine import token_details
from core.approvals.models import ApprovalInputError, DecisionReason
from core.channels.base import Button
from core.clock import Clock
from core.models.approvals import Approval, Choice
from core.models.deliveries import DeliveryPurpose
from core.store import approvals as approval_store
from core.store.approvals import ApprovalRecord, approval_from_row
from core.store.db import Database
from core.store.deliveries import DeliveryRecord
from core.tokens import TokenClaims, TokenError

CHOICE_LABELS = {Choice.acknowledge: "Acknowledge", Choice.deny: "Deny", Choice.escalate: "Escalate"}
# At most this many prefetched approval rows are kept for deliveries not built yet.
PREFETCH_LIMIT = 10_000


class Buttons:
    """Issues and checks tokens; the dispatcher's prefetcher and enricher for messages about an approval."""

    def __init__(
        self, *, db: Database, clock: Clock, keys: KeyManager, directory: Directory, public_url: Callable[[], str]
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys = keys
        self._directory = directory
        self._public_url = public_url
        # Approval rows read for the dispatcher's claimed batch, by delivery id (see prefetch).
        self._prefetched: dict[str, ApprovalRecord] = {}

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
        now = now or self._clock.now()
        seconds = int((approval.expires_at - now).total_seconds())
        if approval.state.final or seconds < 1:
            return []
        level = approval.escalation_level if level is None else level
        ttl = min(self._keys.codec.ttl, seconds)
        public_url = self._public_url()
        out = []
        for choice in approval.choices:
            if choice is Choice.escalate and level >= len(approval.escalation):
                continue  # nobody left to escalate to: no button that can only be refused
            token = self._issue(approval, channel, choice, delivery_id, subject, ttl, now)
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
        now = self._clock.now()
        subject = extra.get("person")
        buttons = self.buttons(
            approval=approval,
            delivery_id=row.id,
            channel=row.channel,
            subject=subject,
            level=approval_row.escalation_level,
            now=now,
        )
        fields["buttons"] = buttons
        if buttons:
            # One row per message, not per token: the message's tokens by key id and nonce hash.
            codec, at = self._keys.codec, int(now.timestamp())
            tokens = [token_details(codec.verify(button.token, now=at)) for button in buttons]
            data = {"delivery_id": row.id, "channel": row.channel, "subject": subject, "tokens": tokens}
            await self._audit_issue(approval, "tokens.issued", now, by="ackbot", platform="dispatcher", data=data)

    async def issue_token(
        self,
        *,
        approval: Approval | None,
        channel: str,
        choice: Choice,
        by: str,
        delivery_id: str | None = None,
        subject: str | None = None,
        ttl: timedelta | None = None,
    ) -> tuple[str, TokenClaims]:
        """One token for an open approval (POST /api/v1/ack-tokens/issue); audited, by kid and nonce hash.

        ApprovalInputError names the field for an unknown approval, a closed one, a choice it does not offer or
        a subject who is not a person.
        """
        now = self._clock.now()
        if approval is None:
            raise ApprovalInputError("approval_id", "no such approval")
        if subject is not None and self._directory.person(subject) is None:
            raise ApprovalInputError("subject", f"no person named {subject!r}")
        if choice not in approval.choices:
            raise ApprovalInputError("choice", f"the approval does not offer {choice.value!r}")
        if approval.state.final:
            raise ApprovalInputError("approval_id", f"the approval is {approval.state.value} already")
        codec = self._keys.codec
        seconds = int((approval.expires_at - now).total_seconds())
        if seconds < 1:
            raise ApprovalInputError("approval_id", "the approval has run out of time")
        wanted = codec.ttl if ttl is None else max(1, int(ttl.total_seconds()))
        token = self._issue(approval, channel, choice, delivery_id, subject, min(wanted, seconds), now)
        claims = codec.verify(token, now=int(now.timestamp()))
        data = {**token_details(claims), "subject": subject}
        await self._audit_issue(approval, "token.issued", now, by=by, platform="api", data=data)
        return token, claims

    async def _audit_issue(
        self, approval: Approval, type: str, at: datetime, *, by: str, platform: str, data: dict[str, Any]
    ) -> None:
        await audit.record_now(
            db=self._db,
            type=type,
            at=at,
            tenant=approval.tenant,
            approval_id=approval.id,
            alert_id=approval.alert_id,
            actor=by,
            actor_platform=platform,
            data=data,
        )

    def _issue(
        self,
        approval: Approval,
        channel: str,
        choice: Choice,
        delivery_id: str | None,
        subject: str | None,
        ttl: int,
        now: datetime,
    ) -> str:
        return self._keys.codec.issue(
            tenant=approval.tenant,
            approval_id=approval.id,
            channel=channel,
            choice=choice.value,
            delivery_id=delivery_id,
            subject=subject,
            ttl=ttl,
            now=int(now.timestamp()),
        )

    async def verify_token(
        self, *, token: str, tenant: str | None = None, choice: str | None = None
    ) -> tuple[TokenClaims | None, DecisionReason | None, bool]:
        """Check a token without spending it: (claims, refusal reason or None, whether its nonce is spent)."""
        now = int(self._clock.now().timestamp())
        try:
            claims = await self._keys.verify(token, now=now, expected_tenant=tenant, expected_choice=choice)
        except TokenError as exc:
            return None, DecisionReason(exc.reason.value), False
        async with self._db.read() as session:
            spent = await approval_store.is_spent(session=session, nonce=claims.nonce)
        return claims, (DecisionReason.replayed if spent else None), spent
