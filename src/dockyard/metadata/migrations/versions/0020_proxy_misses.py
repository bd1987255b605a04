"""proxy_misses: a pull-through cache's recent "not found" answers from its upstream

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_misses",
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("reference", sa.String(length=160), nullable=False),
        sa.Column("until", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("repository", "reference", name=op.f("pk_proxy_misses")),
    )
    op.create_index(op.f("ix_proxy_misses_until"), "proxy_misses", ["until"])


def downgrade() -> None:
    op.drop_index(op.f("ix_proxy_misses_until"), table_name="proxy_misses")
    op.drop_table("proxy_misses")
