"""manifests: a subject's referrers indexed in the referrers API's order

The referrers API answers a page at a time, oldest first (created_at, then id), each
page past the last one's position, filtered by artifact type or not. The index on
(repository_id, subject_digest) found the subject's referrers but not in that order:
every page read and sorted all of them (100,000 artifacts attached to one image, 100
times over). With created_at and id after them a page is one range of the index that
stops at its end; with the artifact type between, a filtered page is one too (not a walk
past every referrer of other types). Deletes, which look a subject's referrers up by the
first two columns, use the first as they used the old one.

Built and dropped concurrently on PostgreSQL: pushes go on meanwhile
(`migrations/indexes.py`).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from dockyard.metadata.migrations.indexes import create_index, drop_index

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

REFERRER = "subject_digest IS NOT NULL"
OLD = {"ix_manifests_repository_id_subject_digest": ["repository_id", "subject_digest"]}
NEW = {
    "ix_manifests_referrers": ["repository_id", "subject_digest", "created_at", "id"],
    "ix_manifests_referrers_by_type": ["repository_id", "subject_digest", "artifact_type",
                                       "created_at", "id"],
}


def _swap(add: dict[str, list[str]], drop: dict[str, list[str]]) -> None:
    # CREATE and DROP INDEX on both dialects (no batch: SQLite would copy the table); a
    # run over a schema that has them (valid) changes nothing
    for name, columns in add.items():
        # the new ones hold referrers only (the old one every manifest): small to build,
        # no write for a manifest that names no subject
        create_index(name, "manifests", columns, where=None if name in OLD else REFERRER)
    for name in drop:
        drop_index(name, "manifests")


def upgrade() -> None:
    _swap(NEW, OLD)


def downgrade() -> None:
    _swap(OLD, NEW)
