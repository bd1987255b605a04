"""blobs: on PostgreSQL an index of the digest in byte order (`COLLATE "C"`)

The collector reads unlinked blobs a page at a time in byte order of their digest, and
the scrub reads a byte-wise range of them (`MetadataStore._sorted`). The primary key's
index is in the database's collation, which serves neither unless that is "C": every
page was a scan and sort of the whole table. On SQLite the primary key's index is in
byte order already (BINARY): nothing to do.

Built concurrently: writes to blobs go on meanwhile (`migrations/indexes.py`).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dockyard.metadata.migrations.indexes import create_index, drop_index

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

INDEX = "ix_blobs_digest_bytewise"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        create_index(INDEX, "blobs", [sa.text('digest COLLATE "C"')])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        drop_index(INDEX, "blobs")
