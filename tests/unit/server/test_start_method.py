"""The supervisor forks its workers only while it has a single thread."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import threading
from dockyard.server import _start_method
print(_start_method())
release = threading.Event()
thread = threading.Thread(target=release.wait)
thread.start()
print(_start_method())
release.set()
thread.join()
print(_start_method())
"""


def test_fork_while_single_threaded_spawn_otherwise() -> None:
    # a fresh interpreter: the test runner's own threads would decide otherwise
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["fork", "spawn", "fork"]
