"""What the decision machine reads and answers, as plain data: the intent, the approval as read (a snapshot), the
configuration it consults (a policy), and the plan the approvals store writes once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.approvals.directory import Directory
from core.approvals.models import DecisionResult
from core.models.approvals import Approval
from core.models.deliveries import DeliveryPurpose
from core.models.people import ALL_TENANTS, Actor, channel_serves
from core.models.rules import Rule
from core.tokens import TokenClaims


class IntentKind(StrEnum):
    """What is asked of an approval."""

    click = "click"  # a signed token: a button, a web link, the API's decide
    command = "command"  # a typed command vouched for by the platform (`/ackbot ack <id>`)
    cancel = "cancel"  # the requester withdraws it
    tick = "tick"  # the scheduler: the due escalation step or the expiry
    bad_token = "bad_token"  # a click whose token did not verify: refused, and audited


@dataclass(frozen=True)
class Intent:
    """One request of an approval, by whom, with what."""

    kind: IntentKind
    actor: Actor
    choice: str | None = None  # as asked: a choice ackbot may not know
    claims: TokenClaims | None = None
    tenant: str | None = None  # the tenant the surface is bound to, when it is
    # bad_token: the token's refusal (reason and message) and whether the token was signed by us but stale
    refusal: DecisionResult | None = None
    stale: bool = False
    # click: the message clicked, when the surface replaces it with the decided view itself, and the outbox
    # worker its update is then held under
    answering: Mapping[str, Any] | None = None
    holder: str | None = None


@dataclass(frozen=True)
class Shown:
    """A conversation an approval was posted to, and the message there an update edits (None: not known yet)."""

    channel: str
    target: str | None
    person: str | None
    message_ref: Mapping[str, Any] | None


@dataclass(frozen=True)
class Snapshot:
    """An approval as read, with everything a decision looks at; `version` is what a plan's write is made on."""

    approval: Approval
    version: int
    event_id: str | None
    created_by: str | None
    created_audited: bool
    next_due_at: datetime | None
    votes: tuple[Mapping[str, Any], ...] = ()  # as the API lists them, oldest first
    shown: tuple[Shown, ...] = ()
    notified: frozenset[tuple[str, str | None]] = frozenset()  # conversations its own messages went to
    nonce_spent: bool = False


@dataclass(frozen=True)
class Policy:
    """What a decision reads of the configuration: people and groups, channels, rules. Read when asked."""

    directory: Directory
    channel_types: Callable[[], Mapping[str, str]]
    rules: Callable[[], Sequence[Rule]]
    # name -> tenant of each channel ("*" shared); a channel it does not name is shared.
    channel_tenants: Callable[[], Mapping[str, str]] = dict

    def channel_types_for(self, tenant: str) -> Mapping[str, str]:
        """The channels (name -> type) that an approval of this tenant may send to: its tenant's and shared ones."""
        tenants = self.channel_tenants()
        return {
            name: kind
            for name, kind in self.channel_types().items()
            if channel_serves(tenants.get(name, ALL_TENANTS), tenant)
        }


@dataclass(frozen=True)
class Queued:
    """A delivery a plan queues for the approval (its tenant, event, alert and id are the approval's)."""

    channel: str
    purpose: DeliveryPurpose
    key: str
    target: str | None = None
    rule: str | None = None
    action_index: int | None = None
    extra: Mapping[str, Any] | None = None
    held_by: str | None = None  # queued already claimed by this worker, for the click's own answer
    held_until: datetime | None = None


@dataclass(frozen=True)
class NonceSpend:
    """The token's nonce, spent with the write: a second use of the token finds it."""

    nonce: str
    expires_at: datetime


@dataclass(frozen=True)
class Plan:
    """What to write, all or nothing, and what to answer. `version` None: nothing on the approval row changes."""

    result: DecisionResult
    approval_id: str | None = None
    version: int | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    nonce: NonceSpend | None = None
    vote: Mapping[str, Any] | None = None
    deliveries: tuple[Queued, ...] = ()
    audit: tuple[Mapping[str, Any], ...] = ()
    votes: tuple[Mapping[str, Any], ...] | None = None  # the votes as the plan leaves them (final states)
    warnings: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        """Whether the intent was refused (what is written then is the audit of it)."""
        return not self.result.ok

    @property
    def writes(self) -> bool:
        """Whether there is anything to write at all."""
        return bool(self.values or self.audit or self.deliveries or self.vote or self.nonce)

    @property
    def wakes_outbox(self) -> bool:
        """Whether the outbox has work from this plan that no surface is holding."""
        return any(queued.held_by is None for queued in self.deliveries)
