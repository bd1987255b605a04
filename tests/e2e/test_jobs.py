"""Background jobs across processes: one collection per interval, taken over after a kill.

Two `dockyard serve` processes share one data directory and metadata store, as two
nodes share their stores: the scheduled collection runs on one of them at a time, once
per `gc.interval`, and when the node that ran it is killed with SIGKILL, the other goes
on collecting.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.support.servers import Server, start_dockyard

CONFIG = "gc: {interval: 1s, grace: 1h}\nlog: {level: info}\n"


def collections(server: Server) -> list[datetime]:
    """When each collection of this node ended (its log line's time)."""
    return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            for line in server.log.read_text().splitlines()
            if "dockyard.gc: collection: " in line]


def wait_for(check: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_one_collection_per_interval_over_two_nodes_and_takeover_after_kill(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    a = start_dockyard(data, config=config, workers=2)
    b = start_dockyard(data, config=config, workers=2)
    try:
        wait_for(lambda: len(collections(a) + collections(b)) >= 6)
        # the lease is kept one interval (1 s) past each run: whichever of the four
        # processes runs next, it starts at least 1 s after the last one ended.
        # Independent schedulers would collect within milliseconds of each other.
        ends = sorted(collections(a) + collections(b))
        gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(ends)]
        assert min(gaps) >= 0.99, gaps
        assert "Traceback" not in a.log.read_text() + b.log.read_text()
        os.killpg(a.proc.pid, signal.SIGKILL)  # the whole node: supervisor and workers
        a.proc.wait()
        before = len(collections(b))
        wait_for(lambda: len(collections(b)) - before >= 2)
    finally:
        a.stop()
        b.stop()
