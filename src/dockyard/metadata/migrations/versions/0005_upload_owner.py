"""uploads.owner: who opened each upload session, so open sessions can be capped per user

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        # sessions opened before this revision have no owner: they count globally only
        batch.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
        batch.create_index(batch.f("ix_uploads_owner"), ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_index(batch.f("ix_uploads_owner"))
        batch.drop_column("owner")
