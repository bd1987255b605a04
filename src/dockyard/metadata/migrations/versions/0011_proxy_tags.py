"""proxy_tags: provenance and last upstream check of pull-through cache tags

Revision ID: 0011
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_tags",
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("upstream", sa.String(length=1000), nullable=False),
        sa.Column("digest", sa.String(length=160), nullable=False),
        sa.Column("fetched_at", sa.Double(), nullable=False),
        sa.Column("checked_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["repository_id", "tag"], ["tags.repository_id", "tags.name"],
                                name=op.f("fk_proxy_tags_repository_id_tags"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("repository_id", "tag", name=op.f("pk_proxy_tags")),
    )


def downgrade() -> None:
    op.drop_table("proxy_tags")
