"""The log of connections refused at the cap: one line at the start of a flood, then one
summary per interval, naming the busiest addresses."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dockyard.api import connections
from dockyard.api.connections import Refusals


async def test_a_flood_is_two_lines_and_a_quiet_spell_ends_it(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections, "REFUSAL_LOG_INTERVAL", 0.2)
    refusals = Refusals(64)
    with caplog.at_level(logging.WARNING, logger="dockyard.api.connections"):
        for i in range(3000):
            refusals.add(f"10.0.{i % 7}.1" if i < 2000 else f"10.1.{i // 256}.{i % 256}")
        await asyncio.sleep(0.3)
        lines = [r.getMessage() for r in caplog.records]
        assert lines[0] == ("refused a connection from 10.0.0.1: 64 unauthenticated "
                            "connections open already")
        assert len(lines) == 2
        assert lines[1].startswith("refused 2999 more connection(s) in 0.2s at 64 "
                                   "unauthenticated connections per address: 10.0.")
        # the 5 busiest named (10.0.0.1's first refusal was the line before); the other
        # address of the 7 and the 1000 addresses seen once counted together
        assert lines[1].endswith(": 10.0.1.1 286, 10.0.2.1 286, 10.0.3.1 286, 10.0.4.1 286, "
                                 "10.0.5.1 285, others 1570")
        await asyncio.sleep(0.3)  # nothing refused meanwhile: no line, the spell ends
        assert len(caplog.records) == 2
        refusals.add("10.9.9.9")  # a new spell starts with a line of its own
        assert caplog.records[-1].getMessage().startswith("refused a connection from 10.9.9.9")
