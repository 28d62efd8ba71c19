"""SQLAlchemy 2 typed tables. The Alembic migrations under core/store/migrations must match them (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, MetaData, String, Text, TypeDecorator
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
