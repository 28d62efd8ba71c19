"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.store.tables
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("severity_rank", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column(
            "scope", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "links", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("first_seen", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("acknowledged_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_tenant_status_last_seen", ["tenant", "status", "last_seen"], unique=False)
        batch_op.create_index(
            "uq_alerts_active_fingerprint",
            ["tenant", "fingerprint"],
            unique=True,
            sqlite_where=sa.text("status != 'resolved'"),
            postgresql_where=sa.text("status != 'resolved'"),
        )

    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=True),
        sa.Column(
            "approvers", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "targets", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "choices", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("allow_self_approval", sa.Boolean(), nullable=False),
        sa.Column(
            "escalation", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column(
            "context", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("alert_id", sa.String(length=40), nullable=True),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_audited", sa.Boolean(), nullable=False),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("next_due_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("decided_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_choice", sa.String(length=16), nullable=True),
        sa.Column("decision_channel", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approvals_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_approvals_created_audited"), ["created_audited"], unique=False)
        batch_op.create_index(batch_op.f("ix_approvals_next_due_at"), ["next_due_at"], unique=False)
        batch_op.create_index("ix_approvals_tenant_state_id", ["tenant", "state", "id"], unique=False)

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("approval_id", sa.String(length=40), nullable=True),
        sa.Column("alert_id", sa.String(length=40), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("actor_platform", sa.String(length=16), nullable=True),
        sa.Column(
            "data", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_approval_id"), ["approval_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_type"), ["type"], unique=False)

    op.create_table(
        "channels",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "settings", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channels")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        sa.Column("alert_id", sa.String(length=40), nullable=True),
        sa.Column("approval_id", sa.String(length=40), nullable=True),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("action_index", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "message_ref", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("suppressed_count", sa.Integer(), nullable=False),
        sa.Column(
            "extra", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_deliveries_idempotency_key")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deliveries_approval_id"), ["approval_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deliveries_event_id"), ["event_id"], unique=False)
        batch_op.create_index("ix_deliveries_status_next_attempt_at", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "digest_windows",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("schedule", sa.String(length=100), nullable=True),
        sa.Column("window_start", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("window_end", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "options", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("flushed_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("flush_reason", sa.String(length=16), nullable=True),
        sa.Column("flushed_by", sa.String(length=100), nullable=True),
        sa.Column("delivery_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_windows")),
    )
    with op.batch_alter_table("digest_windows", schema=None) as batch_op:
        batch_op.create_index("ix_digest_windows_status_window_end", ["status", "window_end"], unique=False)
        batch_op.create_index(
            "uq_digest_windows_open_key",
            ["key"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=True),
        sa.Column("kind", sa.String(length=200), nullable=False),
        sa.Column("ts", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("received_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column(
            "scope", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "links", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("dedup_key", sa.String(length=500), nullable=True),
        sa.Column("alert_id", sa.String(length=40), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index("ix_events_received_at", ["received_at"], unique=False)
        batch_op.create_index("uq_events_tenant_client_id", ["tenant", "client_id"], unique=True)

    op.create_table(
        "noise_keys",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("window_until", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("suppressed", sa.Integer(), nullable=False),
        sa.Column("carried", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_noise_keys")),
    )
    with op.batch_alter_table("noise_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_noise_keys_window_until"), ["window_until"], unique=False)

    op.create_table(
        "noise_waits",
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("action_index", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("until", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_noise_waits")),
    )
    with op.batch_alter_table("noise_waits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_noise_waits_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_noise_waits_until"), ["until"], unique=False)

    op.create_table(
        "report_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scheduled_for", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("started_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column(
            "summary", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_runs")),
    )
    with op.batch_alter_table("report_runs", schema=None) as batch_op:
        batch_op.create_index("uq_report_runs_name_scheduled_for", ["name", "scheduled_for"], unique=True)

    op.create_table(
        "rules",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column(
            "body", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rules")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("material", sa.Text(), nullable=False),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", core.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signing_keys_purpose"), ["purpose"], unique=False)

    op.create_table(
        "silence_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silence_revision")),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=100), nullable=False),
        sa.Column(
            "matchers", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("alert_id", sa.String(length=40), nullable=True),
        sa.Column("starts_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.create_index("ix_silences_ends_at_tenant", ["ends_at", "tenant"], unique=False)

    op.create_table(
        "spent_nonces",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("approval_id", sa.String(length=40), nullable=False),
        sa.Column("spent_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_spent_nonces")),
    )
    with op.batch_alter_table("spent_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spent_nonces_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "teams_conversations",
        sa.Column("conversation_id", sa.String(length=512), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tenant_id", sa.String(length=100), nullable=True),
        sa.Column("team_id", sa.String(length=512), nullable=True),
        sa.Column("team_name", sa.String(length=300), nullable=True),
        sa.Column("channel_id", sa.String(length=512), nullable=True),
        sa.Column("channel_name", sa.String(length=300), nullable=True),
        sa.Column("user_aad_id", sa.String(length=100), nullable=True),
        sa.Column("service_url", sa.String(length=500), nullable=False),
        sa.Column(
            "reference", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("installed", sa.Boolean(), nullable=False),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_teams_conversations")),
    )
    with op.batch_alter_table("teams_conversations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_teams_conversations_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_teams_conversations_user_aad_id"), ["user_aad_id"], unique=False)

    op.create_table(
        "approval_votes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.String(length=40), nullable=False),
        sa.Column("person", sa.String(length=100), nullable=False),
        sa.Column("choice", sa.String(length=16), nullable=False),
        sa.Column("actor_platform", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=True),
        sa.Column("created_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"], ["approvals.id"], name=op.f("fk_approval_votes_approval_id_approvals"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_votes")),
    )
    with op.batch_alter_table("approval_votes", schema=None) as batch_op:
        batch_op.create_index("uq_approval_votes_approval_id_person", ["approval_id", "person"], unique=True)

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_attempts_delivery_id"), ["delivery_id"], unique=False)

    op.create_table(
        "digest_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("window_id", sa.String(length=40), nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("severity_rank", sa.Integer(), nullable=False),
        sa.Column("group_key", sa.String(length=500), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("first_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_at", core.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["window_id"],
            ["digest_windows.id"],
            name=op.f("fk_digest_items_window_id_digest_windows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_items")),
    )
    with op.batch_alter_table("digest_items", schema=None) as batch_op:
        batch_op.create_index("uq_digest_items_window_id_alert_id", ["window_id", "alert_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("digest_items", schema=None) as batch_op:
        batch_op.drop_index("uq_digest_items_window_id_alert_id")

    op.drop_table("digest_items")
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempts_delivery_id"))

    op.drop_table("delivery_attempts")
    with op.batch_alter_table("approval_votes", schema=None) as batch_op:
        batch_op.drop_index("uq_approval_votes_approval_id_person")

    op.drop_table("approval_votes")
    with op.batch_alter_table("teams_conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teams_conversations_user_aad_id"))
        batch_op.drop_index(batch_op.f("ix_teams_conversations_name"))

    op.drop_table("teams_conversations")
    with op.batch_alter_table("spent_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spent_nonces_expires_at"))

    op.drop_table("spent_nonces")
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.drop_index("ix_silences_ends_at_tenant")

    op.drop_table("silences")
    op.drop_table("silence_revision")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_keys_purpose"))

    op.drop_table("signing_keys")
    op.drop_table("rules")
    with op.batch_alter_table("report_runs", schema=None) as batch_op:
        batch_op.drop_index("uq_report_runs_name_scheduled_for")

    op.drop_table("report_runs")
    with op.batch_alter_table("noise_waits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_noise_waits_until"))
        batch_op.drop_index(batch_op.f("ix_noise_waits_alert_id"))

    op.drop_table("noise_waits")
    with op.batch_alter_table("noise_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_noise_keys_window_until"))

    op.drop_table("noise_keys")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("uq_events_tenant_client_id")
        batch_op.drop_index("ix_events_received_at")
        batch_op.drop_index(batch_op.f("ix_events_alert_id"))

    op.drop_table("events")
    with op.batch_alter_table("digest_windows", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_digest_windows_open_key",
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )
        batch_op.drop_index("ix_digest_windows_status_window_end")

    op.drop_table("digest_windows")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_deliveries_event_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_approval_id"))
        batch_op.drop_index(batch_op.f("ix_deliveries_alert_id"))

    op.drop_table("deliveries")
    op.drop_table("channels")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_type"))
        batch_op.drop_index(batch_op.f("ix_audit_log_approval_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_alert_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_actor"))

    op.drop_table("audit_log")
    op.drop_table("audit_head")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_approvals_tenant_state_id")
        batch_op.drop_index(batch_op.f("ix_approvals_next_due_at"))
        batch_op.drop_index(batch_op.f("ix_approvals_created_audited"))
        batch_op.drop_index(batch_op.f("ix_approvals_alert_id"))

    op.drop_table("approvals")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_alerts_active_fingerprint",
            sqlite_where=sa.text("status != 'resolved'"),
            postgresql_where=sa.text("status != 'resolved'"),
        )
        batch_op.drop_index("ix_alerts_tenant_status_last_seen")

    op.drop_table("alerts")
