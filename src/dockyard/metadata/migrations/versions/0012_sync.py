"""mirror_runs, mirror_tags: the history of `dockyard sync` and where mirrored tags came from

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirror_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_runs")),
    )
    op.create_index(op.f("ix_mirror_runs_source_started_at"), "mirror_runs",
                    ["source", "started_at"])
    op.create_table(
        "mirror_tags",
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("upstream", sa.String(length=512), nullable=False),
        sa.Column("digest", sa.String(length=160), nullable=False),
        sa.Column("mirrored_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("repository", "tag", name=op.f("pk_mirror_tags")),
    )
    op.create_index(op.f("ix_mirror_tags_source"), "mirror_tags", ["source"])


def downgrade() -> None:
    op.drop_index(op.f("ix_mirror_tags_source"), table_name="mirror_tags")
    op.drop_table("mirror_tags")
    op.drop_index(op.f("ix_mirror_runs_source_started_at"), table_name="mirror_runs")
    op.drop_table("mirror_runs")
