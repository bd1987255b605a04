"""The storage trend behind `dockyard status`: growth per day and days until full."""

from __future__ import annotations

from dockyard.core.operations import fit_trend
from dockyard.metadata.records import UsageSample

GB = 10**9
DAY = 86400.0


def _samples(used: list[int], step: float = 3600.0) -> list[UsageSample]:
    return [UsageSample(i * step, u, 1000 * GB - u, 1000 * GB, u) for i, u in enumerate(used)]


def test_steady_growth_gives_days_until_full() -> None:
    # 1 GB an hour = 24 GB a day; 500 GB free at the end
    samples = _samples([500 * GB - (24 - i) * GB for i in range(25)])
    trend = fit_trend(samples, free=500 * GB)
    assert trend is not None
    assert abs(trend.bytes_per_day - 24 * GB) < 1e6
    assert trend.days_until_full is not None
    assert abs(trend.days_until_full - 500 / 24) < 0.01


def test_no_growth_means_never_full() -> None:
    trend = fit_trend(_samples([100 * GB] * 10), free=900 * GB)
    assert trend is not None
    assert trend.bytes_per_day == 0
    assert trend.days_until_full is None


def test_shrinking_usage_means_never_full() -> None:
    trend = fit_trend(_samples([100 * GB - i * GB for i in range(10)]), free=900 * GB)
    assert trend is not None
    assert trend.bytes_per_day < 0
    assert trend.days_until_full is None


def test_too_little_history_gives_no_trend() -> None:
    assert fit_trend([], free=GB) is None
    assert fit_trend(_samples([1, 2]), free=GB) is not None
    assert fit_trend(_samples([1, 2], step=60), free=GB) is None  # a minute apart
