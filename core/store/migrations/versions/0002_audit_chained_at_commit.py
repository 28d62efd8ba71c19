"""audit rows chained at commit on PostgreSQL

Revision ID: 0002
Revises: 0001

An append used to lock the audit head with its INSERT and keep it locked until ackbot sent COMMIT: a round trip
and a turn of a busy event loop later. Every other decision, approval and escalation queued behind it, and at
100 clicks/s a burst tipped the queue into seconds. Now an append inserts into audit_pending, and a deferred
constraint trigger chains the row while the transaction commits: the head is locked only inside PostgreSQL.
On SQLite, where writers take turns anyway, a trigger moves the head with each row ackbot appends, which saves
the statement that did it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.store.tables
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The same text as core.store.audit.GENESIS_HASH, written out: a migration must not change when the code does.
_GENESIS_HASH = "0" * 64

# Runs at commit, once per pending row, in the order the rows were inserted. The head is created on the first
# append ever (two first appends meet on its primary key, and the second then waits for the first's lock).
_CHAIN = f"""
CREATE FUNCTION ackbot_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_seq bigint;
    head_hash text;
    row_hash text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{_GENESIS_HASH}') ON CONFLICT (id) DO NOTHING;
        SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    END IF;
    row_hash := encode(
        sha256(convert_to(head_hash || NEW.before_seq || (head_seq + 1)::text || NEW.after_seq, 'UTF8')), 'hex'
    );
    INSERT INTO audit_log (seq, at, tenant, type, approval_id, alert_id, actor, actor_platform, data, prev_hash, hash)
    VALUES (
        head_seq + 1, NEW.at, NEW.tenant, NEW.type, NEW.approval_id, NEW.alert_id, NEW.actor, NEW.actor_platform,
        NEW.data, head_hash, row_hash
    );
    UPDATE audit_head SET seq = head_seq + 1, hash = row_hash WHERE id = 1;
    DELETE FROM audit_pending WHERE id = NEW.id;
    RETURN NULL;
END
$$
"""
_SQLITE_MOVE_HEAD = """
CREATE TRIGGER audit_log_moves_head AFTER INSERT ON audit_log
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
END
"""
_TRIGGER = """
CREATE CONSTRAINT TRIGGER audit_pending_chain AFTER INSERT ON audit_pending
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ackbot_audit_chain()
"""


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
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
        sa.Column("before_seq", sa.Text(), nullable=False),
        sa.Column("after_seq", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CHAIN)
        op.execute(_TRIGGER)
    else:
        op.execute(_SQLITE_MOVE_HEAD)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_pending_chain ON audit_pending")
        op.execute("DROP FUNCTION ackbot_audit_chain()")
    else:
        op.execute("DROP TRIGGER audit_log_moves_head")
    op.drop_table("audit_pending")
