"""blob deletion tombstones, deleted links, manifests.touched_at, collector indexes

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_deletions",
        sa.Column("digest", sa.String(length=160), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_blob_deletions")),
    )
    op.create_table(
        "deleted_links",
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=160), nullable=False),
        sa.Column("deleted_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("repository", "digest", name=op.f("pk_deleted_links")),
    )
    op.create_index(op.f("ix_deleted_links_digest"), "deleted_links", ["digest"])
    op.create_index("ix_blobs_touched_at", "blobs", ["touched_at"])
    with op.batch_alter_table("manifests") as batch:
        batch.add_column(sa.Column("touched_at", sa.Double(), nullable=True))
    op.execute("UPDATE manifests SET touched_at = created_at")
    op.create_index("ix_manifests_touched_at", "manifests", ["touched_at"])


def downgrade() -> None:
    op.drop_index("ix_manifests_touched_at", table_name="manifests")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("touched_at")
    op.drop_index("ix_blobs_touched_at", table_name="blobs")
    op.drop_table("blob_deletions")
    op.drop_index(op.f("ix_deleted_links_digest"), table_name="deleted_links")
    op.drop_table("deleted_links")
