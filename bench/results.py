"""Records that flow from the scenarios to the report: metric specs, outcomes, medians."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class MetricSpec:
    """One figure a scenario reports, and which direction is good."""

    key: str
    label: str
    unit: str
    better: Better
    digits: int = 1


@dataclass
class Outcome:
    """What one scenario measured against one registry in one run."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class Series:
    """One metric for one registry across runs."""

    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def ratio(dockyard: float | None, distribution: float | None) -> float | None:
    if dockyard is None or distribution is None or distribution == 0:
        return None
    return dockyard / distribution


def dockyard_is_better(spec: MetricSpec, r: float) -> bool:
    return r >= 1.0 if spec.better == "higher" else r <= 1.0


@dataclass
class Results:
    """Every series, keyed by metric then registry, plus per-scenario notes and errors."""

    specs: dict[str, MetricSpec] = field(default_factory=dict)
    scenario_of: dict[str, str] = field(default_factory=dict)
    series: dict[str, dict[str, Series]] = field(default_factory=dict)
    notes: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    errors: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def declare(self, scenario: str, specs: tuple[MetricSpec, ...]) -> None:
        for spec in specs:
            self.specs[spec.key] = spec
            self.scenario_of[spec.key] = scenario

    def get(self, key: str, registry: str) -> Series:
        return self.series.setdefault(key, {}).setdefault(registry, Series())

    def record(self, scenario: str, registry: str, outcome: Outcome) -> None:
        for key, value in outcome.values.items():
            self.get(key, registry).values.append(value)
        self.notes.setdefault(scenario, {}).setdefault(registry, {}).update(outcome.notes)

    def record_error(self, scenario: str, registry: str, message: str) -> None:
        self.errors.setdefault(scenario, {}).setdefault(registry, []).append(message)
