"""deliveries.failing_since and deliveries.counted_failures: retries bounded by time, not by a count of tries

Revision ID: 0005
Revises: 0004

A failing delivery is retried for its channel's retry_for, counted from failing_since, its first failure; the
API and the metrics show it. counted_failures are the tries held against max_attempts (a 429 or a Retry-After
answer is not). Deliveries stored before this revision have no failure time: a failing one starts its budget at
its next failure, and its count of tries at nought, so none is given up sooner than before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.store.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("counted_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failing_since", core.store.tables.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("failing_since")
        batch.drop_column("counted_failures")
