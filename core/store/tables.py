"""SQLAlchemy 2 typed tables. The Alembic migrations under core/store/migrations must match them (a test checks)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)


def _sqlite_text(value: datetime | None) -> str | None:
    # The text SQLite's DATETIME stores for the UTC value ("2026-11-22 12:56:54.436372"), written by isoformat in
    # one call: SQLAlchemy's own formats a dict of the fields, and ingest binds several datetimes per event.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]  # without the "+00:00"


JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JsonDoc, list[Any]: JsonDoc}


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(200))
    ts: Mapped[datetime]
    received_at: Mapped[datetime]
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(500))
    summary: Mapped[str] = mapped_column(Text, default="")
    scope: Mapped[dict[str, Any]]
    payload: Mapped[dict[str, Any]]
    links: Mapped[list[Any]]
    dedup_key: Mapped[str | None] = mapped_column(String(500))
    alert_id: Mapped[str | None] = mapped_column(String(40), index=True)
    source: Mapped[str] = mapped_column(String(32))

    __table_args__ = (
        # The client's idempotency key: a re-sent id is answered from the first copy.
        Index("uq_events_tenant_client_id", "tenant", "client_id", unique=True),
        Index("ix_events_received_at", "received_at"),
    )


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    fingerprint: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(500))
    summary: Mapped[str] = mapped_column(Text, default="")
    scope: Mapped[dict[str, Any]]
    payload: Mapped[dict[str, Any]]
    links: Mapped[list[Any]]
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None]
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    last_event_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        # At most one alert per identity is not resolved: concurrent firings of one fingerprint open one alert.
        Index(
            "uq_alerts_active_fingerprint",
            "tenant",
            "fingerprint",
            unique=True,
            sqlite_where=(status != "resolved"),
            postgresql_where=(status != "resolved"),
        ),
        Index("ix_alerts_tenant_status_last_seen", "tenant", "status", "last_seen"),
    )


class DeliveryRow(Base):
    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str | None] = mapped_column(String(40), index=True)
    alert_id: Mapped[str | None] = mapped_column(String(40), index=True)
    approval_id: Mapped[str | None] = mapped_column(String(40), index=True)
    rule: Mapped[str | None] = mapped_column(String(200))
    action_index: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The tries held against the channel's max_attempts: a 429 or an answer with Retry-After is not.
    counted_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the failures since the delivery was queued began (None: it has not failed, or has since been sent):
    # the start of the channel's retry_for budget, and what the API and metrics show of how long it has failed.
    failing_since: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    message_ref: Mapped[dict[str, Any] | None]
    suppressed_count: Mapped[int] = mapped_column(Integer, default=0)
    extra: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),)


class DeliveryAttemptRow(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(40), ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class NoiseKeyRow(Base):
    """One dedup/throttle window per idempotency key hash(tenant, rule, action, channel, kind, identity, status)."""

    __tablename__ = "noise_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_until: Mapped[datetime] = mapped_column(index=True)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    carried: Mapped[int] = mapped_column(Integer, default=0)


class RuleRow(Base):
    """Rules created through the API; rules from the config file are not stored."""

    __tablename__ = "rules"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ChannelRow(Base):
    """Channels created through the API; channels from the config file are not stored."""

    __tablename__ = "channels"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(50))
    # "*": shared by every tenant (what channels made before tenants had channels are).
    tenant: Mapped[str] = mapped_column(String(100), server_default="*")
    enabled: Mapped[bool] = mapped_column(default=True)
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class TeamsConversationRow(Base):
    """A Teams team channel, group chat or 1:1 chat the bot is in: the reference proactive messages need."""

    __tablename__ = "teams_conversations"

    # Teams conversation ids run long (19:...@thread.tacv2, a:1... for personal chats): no short limit.
    conversation_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    # What operators type in a channel's settings: "Team/Channel", a chat's topic, or user:<name>.
    name: Mapped[str] = mapped_column(String(300), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # channel | groupChat | personal
    tenant_id: Mapped[str | None] = mapped_column(String(100))
    team_id: Mapped[str | None] = mapped_column(String(512))
    team_name: Mapped[str | None] = mapped_column(String(300))
    channel_id: Mapped[str | None] = mapped_column(String(512))
    channel_name: Mapped[str | None] = mapped_column(String(300))
    user_aad_id: Mapped[str | None] = mapped_column(String(100), index=True)
    service_url: Mapped[str] = mapped_column(String(500))
    reference: Mapped[dict[str, Any]]
    installed: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# ---------------------------------------------------------------- approvals, tokens and audit


class ApprovalRow(Base):
    """An approval and its state; next_due_at is when the scheduler must look at it again (escalate or expire)."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(500))
    summary: Mapped[str] = mapped_column(Text, default="")
    requester: Mapped[str | None] = mapped_column(String(200))
    approvers: Mapped[list[Any]]
    targets: Mapped[list[Any]]
    choices: Mapped[list[Any]]
    state: Mapped[str] = mapped_column(String(16))
    quorum: Mapped[int] = mapped_column(Integer, default=1)
    allow_self_approval: Mapped[bool] = mapped_column(default=False)
    escalation: Mapped[list[Any]]
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    context: Mapped[dict[str, Any]]
    alert_id: Mapped[str | None] = mapped_column(String(40), index=True)
    event_id: Mapped[str | None] = mapped_column(String(40))
    rule: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(100))
    # False while the "approval.created" audit row is still to be written (approvals opened inside an ingest
    # transaction: appending there would hold the audit lock across the whole batch).
    created_audited: Mapped[bool] = mapped_column(default=True, index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    next_due_at: Mapped[datetime | None] = mapped_column(index=True)
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_choice: Mapped[str | None] = mapped_column(String(16))
    decision_channel: Mapped[str | None] = mapped_column(String(100))
    # Moved on by every write; a write is made only on the version its plan read (core/approvals/machine.py).
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("ix_approvals_tenant_state_id", "tenant", "state", "id"),)


class ApprovalVoteRow(Base):
    """One person's acknowledge vote toward a quorum; the unique index makes a second vote of one person fail."""

    __tablename__ = "approval_votes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(String(40), ForeignKey("approvals.id", ondelete="CASCADE"))
    person: Mapped[str] = mapped_column(String(100))
    choice: Mapped[str] = mapped_column(String(16))
    actor_platform: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]

    __table_args__ = (Index("uq_approval_votes_approval_id_person", "approval_id", "person", unique=True),)


class SpentNonceRow(Base):
    """Ack-token nonces already used: the primary key makes every nonce single use across replicas."""

    __tablename__ = "spent_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    approval_id: Mapped[str] = mapped_column(String(40))
    spent_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SigningKeyRow(Base):
    """Generated secrets shared by every replica: ack-token keys (hmac, dsse), the callback and CSRF secrets."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), index=True)
    material: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class AuditRow(Base):
    """The append-only audit log; each row carries the hash of the one before (a hash chain)."""

    __tablename__ = "audit_log"

    # Head seq + 1, taken under the head's lock (at commit on PostgreSQL, see AuditPendingRow), never a sequence.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime]
    tenant: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(64), index=True)
    approval_id: Mapped[str | None] = mapped_column(String(40), index=True)
    alert_id: Mapped[str | None] = mapped_column(String(40), index=True)
    actor: Mapped[str | None] = mapped_column(String(200), index=True)
    actor_platform: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditPendingRow(Base):
    """PostgreSQL: an audit row waiting for its transaction's commit, where a deferred trigger chains it.

    The trigger (migration 0002) locks the head, moves the row into audit_log with the next seq and its hash, and
    deletes it here, so the head is locked only while a commit runs, never across a round trip to ackbot. The
    canonical JSON of the row is kept as the text before and after its seq, which only the head decides. SQLite
    (one writer at a time already) appends to audit_log directly and leaves this table empty.
    """

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime]
    tenant: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(64))
    approval_id: Mapped[str | None] = mapped_column(String(40))
    alert_id: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(200))
    actor_platform: Mapped[str | None] = mapped_column(String(16))
    data: Mapped[dict[str, Any]]
    before_seq: Mapped[str] = mapped_column(Text)
    after_seq: Mapped[str] = mapped_column(Text)


class AuditHeadRow(Base):
    """One row: the last audit seq and hash. Locked (FOR UPDATE) to serialize appends, and it exposes truncation."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# ---------------------------------------------------------------- noise control: digests, waits, silences, reports


class DigestWindowRow(Base):
    """One digest window of one rule action, channel and target; open until flushed, flushed exactly once."""

    __tablename__ = "digest_windows"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # sha256 of (tenant, rule, action, channel, target, window_end): at most one open window per key.
    key: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(String(200))
    action_index: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # schedule | quiet
    schedule: Mapped[str | None] = mapped_column(String(100))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    options: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # open | flushed
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    event_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    flushed_at: Mapped[datetime | None]
    flush_reason: Mapped[str | None] = mapped_column(String(16))
    flushed_by: Mapped[str | None] = mapped_column(String(100))
    delivery_id: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index(
            "uq_digest_windows_open_key",
            "key",
            unique=True,
            sqlite_where=(status == "open"),
            postgresql_where=(status == "open"),
        ),
        Index("ix_digest_windows_status_window_end", "status", "window_end"),
    )


class DigestItemRow(Base):
    """One alert in a digest window; repeated events of the alert count up on the same row."""

    __tablename__ = "digest_items"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    window_id: Mapped[str] = mapped_column(String(40), ForeignKey("digest_windows.id", ondelete="CASCADE"))
    alert_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    severity_rank: Mapped[int] = mapped_column(Integer)
    group_key: Mapped[str] = mapped_column(String(500))
    title: Mapped[str] = mapped_column(String(500))
    events: Mapped[int] = mapped_column(Integer, default=1)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]

    __table_args__ = (Index("uq_digest_items_window_id_alert_id", "window_id", "alert_id", unique=True),)


class NoiseWaitRow(Base):
    """A delivery held by `for:` until `until`; a resolve before then cancels it."""

    __tablename__ = "noise_waits"

    delivery_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(40), index=True)
    rule: Mapped[str] = mapped_column(String(200))
    action_index: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(100))
    until: Mapped[datetime] = mapped_column(index=True)


class SilenceRow(Base):
    """A silence or maintenance window: events its matchers match are recorded but not notified."""

    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    matchers: Mapped[dict[str, Any]]
    alert_id: Mapped[str | None] = mapped_column(String(40))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_silences_ends_at_tenant", "ends_at", "tenant"),)


class SilenceRevisionRow(Base):
    """One row, bumped by every silence write: replicas reload their silences when it moves, not per event."""

    __tablename__ = "silence_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)


class ReportRunRow(Base):
    """One run of a report; the unique (name, scheduled_for) makes each scheduled time fire once across replicas."""

    __tablename__ = "report_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scheduled_for: Mapped[datetime]
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual
    started_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]]

    __table_args__ = (Index("uq_report_runs_name_scheduled_for", "name", "scheduled_for", unique=True),)


def table_of(model: type[Base]) -> Table:
    """A mapped class's Table, typed as one (Core statements want a Table, __table__ is typed FromClause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table
