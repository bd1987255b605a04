"""The worker loop's handler of errors no one awaited (`server.loop_errors`)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from dockyard.server import loop_errors


class ClientRequest:
    """Named as aiohttp's, whose `write_bytes` task is what the handler recognises."""

    async def write_bytes(self) -> None:
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")


async def other() -> None:
    raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")


async def failed(coro: object) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    await asyncio.wait([task])
    return task


async def test_an_aiohttp_body_task_failing_is_one_line(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    loop = asyncio.get_running_loop()
    task = await failed(ClientRequest().write_bytes())
    with caplog.at_level(logging.WARNING):
        loop_errors(loop, {"message": "Task exception was never retrieved",
                           "exception": task.exception(), "future": task})
    assert [r.getMessage() for r in caplog.records] == [
        "an upstream request's body was not sent, its connection closed: "
        "Cannot write to closing transport"]
    assert caplog.records[0].exc_info is None


async def test_anything_else_goes_to_the_default_handler(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    loop = asyncio.get_running_loop()
    task = await failed(other())
    with caplog.at_level(logging.WARNING):
        loop_errors(loop, {"message": "Task exception was never retrieved",
                           "exception": task.exception(), "future": task})
    assert [r.name for r in caplog.records] == ["asyncio"]
    assert caplog.records[0].exc_info is not None  # asyncio's own report, traceback too
