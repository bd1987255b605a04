"""Alembic migrations of the metadata schema, run at start by `metadata.engine`."""
