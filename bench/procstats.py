"""Server-side cost from psutil: CPU seconds and RSS of a process and all its children."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil


class ProcessTree:
    """The registry's root process(es) and, at each look, their current descendants.

    Several roots make one tree: the nodes of a cluster and nginx, or Dockyard and the
    PostgreSQL it keeps its metadata in.
    """

    def __init__(self, *pids: int) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]

    def processes(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for root in self.roots:
            try:
                out += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return out

    def cpu_by_pid(self) -> dict[int, float]:
        """User + system CPU seconds of every live process in the tree."""
        out: dict[int, float] = {}
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[proc.pid] = times.user + times.system
        return out

    def rss_by_pid(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for proc in self.processes():
            try:
                out[proc.pid] = proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return out

    def memory_by_pid(self) -> dict[int, tuple[int, int]]:
        """(RSS, PSS) of every live process; PSS splits shared pages between sharers, so
        its sum does not count a forked worker's inherited pages twice."""
        out: dict[int, tuple[int, int]] = {}
        for proc in self.processes():
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out[proc.pid] = (info.rss, getattr(info, "pss", info.rss))
        return out


class CpuMeter:
    """CPU seconds the tree spent between `start()` and `stop()`.

    Processes that appear in between count from zero; a process that exits in between
    loses what it used after the first look (noted in `lost_processes`).
    """

    def __init__(self, tree: ProcessTree) -> None:
        self.tree = tree
        self._before: dict[int, float] = {}
        self.seconds = 0.0
        self.lost_processes = 0

    def start(self) -> None:
        self._before = self.tree.cpu_by_pid()

    def stop(self) -> float:
        after = self.tree.cpu_by_pid()
        self.seconds = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        self.lost_processes = len(set(self._before) - set(after))
        return self.seconds


@dataclass
class RssPeaks:
    total: int = 0
    """Largest sum of RSS over the whole tree seen in one sample (bytes)."""
    total_pss: int = 0
    """Largest sum of PSS over the whole tree seen in one sample (bytes)."""
    per_process: dict[int, int] = field(default_factory=dict)
    """Largest RSS each process reached (bytes)."""
    samples: int = 0

    @property
    def max_process(self) -> int:
        return max(self.per_process.values(), default=0)


class RssSampler:
    """Samples the tree's RSS from a thread, so a busy event loop does not skew it."""

    def __init__(self, tree: ProcessTree, interval: float) -> None:
        self.tree = tree
        self.interval = interval
        self.peaks = RssPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break

    def sample(self) -> None:
        memory = self.tree.memory_by_pid()
        peaks = self.peaks
        peaks.samples += 1
        peaks.total = max(peaks.total, sum(rss for rss, _ in memory.values()))
        peaks.total_pss = max(peaks.total_pss, sum(pss for _, pss in memory.values()))
        for pid, (rss, _) in memory.items():
            peaks.per_process[pid] = max(peaks.per_process.get(pid, 0), rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
