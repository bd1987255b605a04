"""Index builds and drops for migrations: on PostgreSQL concurrently, so writes go on.

A plain CREATE INDEX holds a SHARE lock on its table until the build ends: on a table of
millions of rows every push (and every write of the nodes still running the previous
version) waits that long. `CREATE INDEX CONCURRENTLY` takes only SHARE UPDATE EXCLUSIVE,
which no INSERT, UPDATE or DELETE waits for; a plain DROP INDEX takes ACCESS EXCLUSIVE
(reads wait too, and everything queues behind it while it waits for a long transaction),
`DROP INDEX CONCURRENTLY` none that writers wait for. Neither may run inside a
transaction block, so each runs in Alembic's `autocommit_block()`: the migration's
transaction so far is committed first, and a new one begins after for the rest of the
migration and its version stamp (`env.py` runs one transaction per migration).

A concurrent build that fails midway (an error, a cancel, a node killed) leaves the
index behind INVALID: unused by queries, yet still written. IF NOT EXISTS would keep it
for good, so a rerun looks at `pg_index.indisvalid` and builds an invalid one again.
Everything else a migration does (new tables, columns, a new table's indexes) stays
transactional: quick on any size of registry, and all or nothing with its version stamp.
On SQLite these are the plain statements, in the one transaction of the upgrade.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

log = logging.getLogger(__name__)


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def _valid(name: str) -> bool | None:
    """Whether the index `name` is valid on PostgreSQL (None: there is none)."""
    found = op.get_bind().execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name}).scalar()
    return None if found is None else bool(found)


def create_index(name: str, table: str, columns: Sequence[str | sa.TextClause], *,
                 where: str | None = None) -> None:
    """Build index `name` unless a valid one is there; `where` makes it partial."""
    partial = None if where is None else sa.text(where)
    if not _postgresql():
        op.create_index(name, table, columns, if_not_exists=True, sqlite_where=partial)
        return
    with op.get_context().autocommit_block():
        valid = _valid(name)
        if valid:
            return
        if valid is False:
            log.warning("index %s was left invalid by a build that did not finish: "
                        "building it again", name)
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(name, table, columns, postgresql_concurrently=True,
                        postgresql_where=partial)


def drop_index(name: str, table: str) -> None:
    """Drop index `name` if it is there."""
    if not _postgresql():
        op.drop_index(name, table_name=table, if_exists=True)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, if_exists=True, postgresql_concurrently=True)
