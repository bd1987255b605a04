"""The seam for logged-out browser sessions (`metadata.sessions.RevokedSessionStore`
implements it): one record every worker and node reads, so a logout holds everywhere."""

from __future__ import annotations

from typing import Protocol


class SessionRevocations(Protocol):
    async def revoke(self, sid: str, until: float) -> None:
        """Refuse session `sid` from now until `until` (when its cookie expires anyway)."""
        ...

    async def revoked(self, sid: str) -> bool:
        """Whether session `sid` was logged out (and its cookie has not expired yet)."""
        ...
