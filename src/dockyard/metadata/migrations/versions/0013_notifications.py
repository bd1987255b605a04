"""notifications: the webhook outbox (one row per endpoint and event until delivered)

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_notifications_endpoint_id"), "notifications", ["endpoint", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_notifications_endpoint_id"), table_name="notifications")
    op.drop_table("notifications")
