"""The metadata store: what exists, in SQLAlchemy Core over SQLite or PostgreSQL."""
