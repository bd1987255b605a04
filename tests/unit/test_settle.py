"""`settle.to_the_end`: the clean-up runs to its end under a cancellation, which the
caller then gets; a clean-up that fails meanwhile is no stray ERROR in the log."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from dockyard.settle import to_the_end


async def test_a_cancelled_caller_waits_for_the_clean_up_then_is_cancelled() -> None:
    done: list[str] = []

    async def clean_up() -> None:
        await asyncio.sleep(0.05)
        done.append("removed")

    task = asyncio.create_task(to_the_end(clean_up()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == ["removed"]


async def test_a_clean_up_failing_after_the_cancel_logs_no_stray_error(
        caplog: pytest.LogCaptureFixture) -> None:
    async def clean_up() -> None:
        await asyncio.sleep(0.05)
        raise OSError("the store is down")

    task = asyncio.create_task(to_the_end(clean_up()))
    await asyncio.sleep(0.01)
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()
        await asyncio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
