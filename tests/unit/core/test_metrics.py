"""Figures gathered in process and moved to the Prometheus values in batches."""

from __future__ import annotations

import pytest

from dockyard.core.metrics import Metrics


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    value = m.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_metadata_writes_and_uploads_in_flight_reach_prometheus_at_a_flush() -> None:
    m = Metrics()
    stats = m.requests_stats
    for seconds in (0.0003, 0.0004, 0.02):
        stats.db_write(seconds)
    stats.uploads += 2
    stats.uploads -= 1
    count = "dockyard_metadata_duration_seconds_count"
    assert sample(m, count, kind="write") in (None, 0.0)  # nothing moved yet
    stats.flush()
    assert sample(m, count, kind="write") == 3
    assert sample(m, "dockyard_metadata_duration_seconds_sum", kind="write") == \
        pytest.approx(0.0207)
    bucket = "dockyard_metadata_duration_seconds_bucket"
    assert sample(m, bucket, kind="write", le="0.0005") == 2
    assert sample(m, bucket, kind="write", le="0.025") == 3
    assert sample(m, "dockyard_uploads_in_flight") == 1
    stats.uploads -= 1
    stats.flush()
    stats.flush()  # nothing new: nothing changes
    assert sample(m, "dockyard_uploads_in_flight") == 0
    assert sample(m, count, kind="write") == 3
