"""Alembic environment: runs on the connection `metadata.engine.migrate` hands over.

On SQLite that connection is already in the upgrade's one transaction, which Alembic
then uses. On PostgreSQL it is not, and each migration is a transaction of its own with
its version stamp: a migration that builds an index concurrently commits before the
build (`migrations/indexes.py`), so the ones before it must stand on their own.
"""

from __future__ import annotations

from alembic import context

from dockyard.metadata.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
