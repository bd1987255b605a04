"""Background jobs across processes: one collection per interval, taken over after a kill.

Two `dockyard serve` processes share one data directory and metadata store, as two
nodes share their stores: the scheduled collection runs on one of them at a time, once
per `gc.interval`, and when the node that ran it is killed with SIGKILL, the other goes
on collecting.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support.servers import Server, start_dockyard

CONFIG = "gc: {interval: 1s, grace: 1h}\nlog: {level: info}\n"


def collections(server: Server) -> int:
    return sum(1 for line in server.log.read_text().splitlines()
               if "dockyard.gc: collection: " in line)


def test_one_collection_per_interval_over_two_nodes_and_takeover_after_kill(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    a = start_dockyard(data, config=config, workers=2)
    b = start_dockyard(data, config=config, workers=2)
    try:
        time.sleep(6.5)
        together = collections(a) + collections(b)
        # due every 1 s: 4 to 7 runs in 6.5 s (the first waits up to one look, 0.5-1 s);
        # four independent schedulers would have collected about 24 times
        assert 4 <= together <= 7, (collections(a), collections(b))
        assert "Traceback" not in a.log.read_text() + b.log.read_text()
        os.killpg(a.proc.pid, signal.SIGKILL)  # the whole node: supervisor and workers
        a.proc.wait()
        before = collections(b)
        time.sleep(4.5)
        assert collections(b) - before >= 2, b.log.read_text()[-3000:]
    finally:
        a.stop()
        b.stop()
