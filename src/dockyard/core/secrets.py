"""The seam for shared random keys (`metadata.secrets.SecretStore` implements it)."""

from __future__ import annotations

from typing import Protocol


class SecretBackend(Protocol):
    async def key(self, name: str, size: int = 32) -> bytes:
        """The key `name`, the same for every process; made once if missing."""
        ...
