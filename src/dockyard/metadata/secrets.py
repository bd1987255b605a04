"""Random keys every worker and node shares, kept in the metadata store (`secrets`)."""

from __future__ import annotations

import secrets as random
import time

from sqlalchemy import select
from sqlalchemy.engine import Connection

from dockyard.metadata.schema import secrets
from dockyard.metadata.store import MetadataStore


class SecretStore:
    """Named random keys: made once, by whoever asks first, then the same for all."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    async def key(self, name: str, size: int = 32) -> bytes:
        """The key `name`, made now (`size` random bytes) if there is none yet; two
        processes asking at once both get the one that was stored first."""
        found = await self.store._read(select(secrets.c.value).where(secrets.c.name == name))
        if found:
            return bytes(found[0][0])
        value = random.token_bytes(size)
        insert = (self.store._upsert(secrets)
                  .values(name=name, value=value, created_at=time.time())
                  .on_conflict_do_nothing(index_elements=["name"]))

        def body(conn: Connection) -> bytes:
            conn.execute(insert)
            stored = conn.scalar(select(secrets.c.value).where(secrets.c.name == name))
            assert stored is not None
            return bytes(stored)

        result: bytes = await self.store.engines.transaction(body)
        return result
