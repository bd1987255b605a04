"""usage_samples, collections: the storage growth trend and the collections' history

Revision ID: 0010
Revises: 0006 (0009 once the branches of 0007-0009 are merged)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_samples",
        sa.Column("taken_at", sa.Double(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("free_bytes", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("blob_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("taken_at", name="pk_usage_samples"),
    )
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("duration", sa.Double(), nullable=False),
        sa.Column("blobs_deleted", sa.Integer(), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_collections"),
    )
    op.create_index("ix_collections_started_at", "collections", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_collections_started_at", table_name="collections")
    op.drop_table("collections")
    op.drop_table("usage_samples")
