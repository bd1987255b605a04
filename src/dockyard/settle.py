"""`to_the_end`: clean-up that a second cancellation must not cut off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def to_the_end(work: Awaitable[T]) -> T:
    """Await `work` to its end even when the caller is cancelled meanwhile, then raise
    the cancellation. `asyncio.shield` alone lets the clean-up run on unawaited, so a
    caller cancelled while removing what it made returns before the removal is done
    (a task group's sibling failing while this one cleans up after its own failure)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # the caller gets the cancellation, not the clean-up's failure: mark that seen
        # (asyncio logged it as an ERROR, "Task exception was never retrieved")
        task.add_done_callback(_seen)
        await asyncio.wait([task])  # a further cancel here leaves it to run on, shielded
        raise


def _seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
