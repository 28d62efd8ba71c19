"""approvals.version: every write to an approval is made on the version it read

Revision ID: 0003
Revises: 0002

A decision reads an approval, plans, and writes only if the row still has the version it read (and moves it on),
so two concurrent writes of any kind conflict: two quorum votes, a vote and an escalation, a decision and the
scheduler's expiry. The loser reads again and plans again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("version")
