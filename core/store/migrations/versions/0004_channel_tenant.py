"""channels.tenant: a channel made through the API belongs to a tenant, or is shared by every tenant ("*")

Revision ID: 0004
Revises: 0003

A tenant's key sees and changes only its tenant's channels (and sees shared ones), and its rules may name only
those. Channels stored before this revision become shared, which is what they were in effect.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("tenant", sa.String(100), nullable=False, server_default="*"))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("tenant")
