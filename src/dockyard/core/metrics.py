"""The registry's Prometheus metrics, one set for every process of a server.

A server runs N worker processes; `prometheus_client`'s multiprocess mode gives one
coherent set: each process writes its values to memory-mapped files in one directory
per run (`enable_multiprocess`, called by the server before any metric exists), and a
scrape on any worker sums them (`collect`). Metrics are created on first use
(`metrics()`), so the mode is chosen before they are.

Per-request figures are not written to the shared files by each request: a request
adds to plain in-process counters (`RequestStats.record`, a few dict operations), and
`RequestStats.flush` moves them into the Prometheus values once a second and before a
scrape. This kept the manifest GET benchmark within noise. Metadata write latency and
the uploads-in-flight gauge are gathered the same way (a push makes several of each).
"""

from __future__ import annotations

import os
import shutil
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
"""Request latency buckets (seconds): cheap manifest GETs to long blob transfers."""
DB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
              0.25, 1.0, 5.0)
ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(directory: Path) -> None:
    """Make `directory` (emptied first) this run's multiprocess directory, for this
    process and the workers it starts. Call before any metric is created."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV)


def process_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (its counters still count)."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric of the registry (names `dockyard_*`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.registry = r
        self.requests = Counter("dockyard_http_requests", "HTTP requests answered, by "
                                "route id (never the path), method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("dockyard_http_request_duration_seconds",
                                 "Time from request head to the response's last byte",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("dockyard_http_request_bytes",
                                "Request body bytes received", ["route"], registry=r)
        self.bytes_out = Counter("dockyard_http_response_bytes",
                                 "Response bytes sent", ["route"], registry=r)
        self.sendfile_bytes = Counter("dockyard_sendfile_bytes",
                                      "Blob bytes the kernel sent from local files "
                                      "(zero-copy sendfile)", registry=r)
        self.uploads_in_flight = Gauge("dockyard_uploads_in_flight",
                                       "Upload requests (PATCH, PUT, POST) writing now",
                                       multiprocess_mode="livesum", registry=r)
        self.auth_failures = Counter("dockyard_auth_failures",
                                     "Requests refused for missing or bad credentials "
                                     "(401) or by the policy (403)", ["reason"], registry=r)
        self.rate_limited = Counter("dockyard_rate_limited",
                                    "Requests refused by a limit (429/507)", ["limit"],
                                    registry=r)
        self.gc_runs = Counter("dockyard_gc_runs", "Collections run, by outcome",
                               ["outcome"], registry=r)
        self.gc_duration = Histogram("dockyard_gc_duration_seconds",
                                     "Duration of collections",
                                     buckets=(0.1, 1, 5, 15, 60, 300, 900, 3600),
                                     registry=r)
        self.gc_freed = Counter("dockyard_gc_freed_bytes", "Bytes freed by collections",
                                registry=r)
        self.gc_last_success = Gauge("dockyard_gc_last_success_timestamp_seconds",
                                     "When the last collection of this run succeeded",
                                     multiprocess_mode="max", registry=r)
        self.db_latency = Histogram("dockyard_metadata_duration_seconds",
                                    "Metadata store write transactions and readiness "
                                    "pings", ["kind"], buckets=DB_BUCKETS, registry=r)
        self.worker_restarts = Counter("dockyard_worker_restarts",
                                       "Worker processes that died and were restarted",
                                       registry=r)
        self.start_time = Gauge("dockyard_start_time_seconds",
                                "When the server (its supervisor) started",
                                multiprocess_mode="max", registry=r)
        self.workers = Gauge("dockyard_workers", "Worker processes alive",
                             multiprocess_mode="livesum", registry=r)
        self.notify_delivered = Counter("dockyard_notifications_delivered",
                                        "Events an endpoint accepted", ["endpoint"],
                                        registry=r)
        self.notify_failed = Counter("dockyard_notifications_failed",
                                     "Failed deliveries to an endpoint (each is retried)",
                                     ["endpoint"], registry=r)
        self.notify_dropped = Counter("dockyard_notifications_dropped",
                                      "Events dropped unsent: past notifications."
                                      "max_queued, or for an endpoint no longer "
                                      "configured", ["endpoint"], registry=r)
        self.notify_pending = Gauge("dockyard_notifications_pending",
                                    "Events queued for an endpoint, as its deliverer "
                                    "last saw", ["endpoint"],
                                    multiprocess_mode="livemostrecent", registry=r)
        self.notify_latency = Histogram("dockyard_notifications_request_duration_seconds",
                                        "Time an endpoint took to accept an envelope",
                                        ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.notify_age = Histogram("dockyard_notifications_delay_seconds",
                                    "Time from queueing to delivery (oldest event of "
                                    "each envelope)", ["endpoint"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.proxy_pulls = Counter("dockyard_proxy_manifest_pulls",
                                   "Manifest pulls of pull-through caches, by cache prefix "
                                   "and how they were answered: hit, revalidated, fetched, "
                                   "stale, not_found, not_found_cached, unavailable",
                                   ["prefix", "outcome"], registry=r)
        self.proxy_fetches = Counter("dockyard_proxy_blob_fetches",
                                     "Blob fetches from pull-through caches' upstreams, by "
                                     "cache prefix and outcome: stored, failed",
                                     ["prefix", "outcome"], registry=r)
        self.proxy_fetched_bytes = Counter("dockyard_proxy_blob_fetched_bytes",
                                           "Bytes of blobs fetched from upstreams and "
                                           "stored, by cache prefix", ["prefix"], registry=r)
        self.requests_stats = RequestStats(self)


_METRICS: Metrics | None = None


def metrics() -> Metrics:
    """This process's metrics, created on first use."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS


def reset_for_tests() -> None:
    global _METRICS
    _METRICS = None


class _Stats:
    """One route, method and status: requests, latency bucket counts, sum, bytes."""

    __slots__ = ("buckets", "bytes_in", "bytes_out", "count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0
        self.bytes_in = 0
        self.bytes_out = 0


class RequestStats:
    """Per-request figures gathered in plain counters, moved to Prometheus in batches."""

    __slots__ = ("_metrics", "db_buckets", "db_seconds", "proxy_pulls", "stats", "uploads")

    def __init__(self, m: Metrics) -> None:
        self._metrics = m
        self.stats: dict[tuple[str, str, int], _Stats] = {}
        #: metadata write transactions: bucket counts and their sum
        self.db_buckets = [0] * (len(DB_BUCKETS) + 1)
        self.db_seconds = 0.0
        #: upload requests started minus finished since the last flush
        self.uploads = 0
        #: pull-through caches' manifest pulls, by (prefix, outcome)
        self.proxy_pulls: dict[tuple[str, str], int] = {}

    def proxy_pull(self, prefix: str, outcome: str) -> None:
        """One manifest pull of the cache `prefix`, answered as `outcome` (a cache hit
        is as common as any manifest GET: counted here, not in the shared files)."""
        key = (prefix, outcome)
        self.proxy_pulls[key] = self.proxy_pulls.get(key, 0) + 1

    def db_write(self, seconds: float) -> None:
        """One metadata write transaction's duration (several run for each push)."""
        self.db_buckets[bisect_left(DB_BUCKETS, seconds)] += 1
        self.db_seconds += seconds

    def record(self, route: str, method: str, status: int, seconds: float,
               bytes_in: int, bytes_out: int) -> None:
        """One request (a dict lookup and a few additions: this runs for every one)."""
        key = (route, method, status)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = _Stats()
        stats.count += 1
        stats.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        stats.seconds += seconds
        if bytes_in:
            stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out

    def flush(self) -> None:
        """Add what was gathered since the last flush to the Prometheus values."""
        m = self._metrics
        if self.uploads:
            m.uploads_in_flight.inc(self.uploads)
            self.uploads = 0
        if any(self.db_buckets):
            _observed(m.db_latency.labels("write"), self.db_buckets, self.db_seconds)
            self.db_buckets, self.db_seconds = [0] * (len(DB_BUCKETS) + 1), 0.0
        if self.proxy_pulls:
            pulls, self.proxy_pulls = self.proxy_pulls, {}
            for (prefix, outcome), n in pulls.items():
                m.proxy_pulls.labels(prefix, outcome).inc(n)
        if not self.stats:
            return
        gathered, self.stats = self.stats, {}
        for (route, method, status), stats in gathered.items():
            m.requests.labels(route, method, str(status)).inc(stats.count)
            _observed(m.latency.labels(route, method), stats.buckets, stats.seconds)
            if stats.bytes_in:
                m.bytes_in.labels(route).inc(stats.bytes_in)
            if stats.bytes_out:
                m.bytes_out.labels(route).inc(stats.bytes_out)


def _observed(child: Histogram, buckets: list[int], seconds: float) -> None:
    """Add gathered observations to a histogram: its own buckets hold per-bucket counts
    (cumulated on export), then their sum."""
    for i, n in enumerate(buckets):
        if n:
            child._buckets[i].inc(n)
    child._sum.inc(seconds)


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of every process's metrics (or this one's without
    multiprocess mode), plus `extra` collectors (the registry's state)."""
    m = metrics()
    m.requests_stats.flush()
    directory = multiprocess_dir()
    if directory is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
    else:
        registry = m.registry
    for collector in extra:
        registry.register(collector)
    try:
        return generate_latest(registry)
    finally:
        if registry is m.registry:
            for collector in extra:
                registry.unregister(collector)
