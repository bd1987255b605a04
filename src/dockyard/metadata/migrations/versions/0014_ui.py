"""collections: also what a collection deleted of manifests and what stayed stored after
it (the web UI's last collections and storage trend); secrets: random keys shared by
every worker and node (the web UI's session key)

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ADDED = (("manifests_deleted", sa.Integer()), ("stored_blobs", sa.Integer()),
          ("stored_bytes", sa.BigInteger()))


def upgrade() -> None:
    # rows written before this revision knew none of these: 0
    for name, kind in _ADDED:
        op.add_column("collections", sa.Column(name, kind, nullable=False,
                                               server_default="0"))
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secrets")),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    with op.batch_alter_table("collections") as batch:
        for name, _ in reversed(_ADDED):
            batch.drop_column(name)
