"""events (the change feed) and registry_state (shared named values)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=True),
        sa.Column("digest", sa.String(length=160), nullable=True),
        sa.Column("media_type", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_events_at"), "events", ["at"])
    op.create_table(
        "registry_state",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_registry_state")),
    )


def downgrade() -> None:
    op.drop_table("registry_state")
    op.drop_index(op.f("ix_events_at"), table_name="events")
    op.drop_table("events")
