"""Print the results as a rich table (and notes), and write them as JSON."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.config import CLUSTER, REGISTRIES, S3_TARGETS, Settings
from bench.results import Results, dockyard_is_better, ratio
from bench.scenarios import BY_NAME

TITLES = {"distribution": "Distribution", "dockyard": "Dockyard", CLUSTER: "Dockyard nodes"}
STORAGE_TITLES = {"fs": "filesystem", "s3": "S3 (SeaweedFS), Dockyard's metadata in PostgreSQL"}


def _columns(settings: Settings) -> tuple[str, ...]:
    return (*REGISTRIES, CLUSTER) if settings.storage == "s3" else REGISTRIES


def _target_cell(key: str, r: float | None) -> str:
    least = S3_TARGETS.get(key)
    if least is None:
        return ""
    if r is None:
        return f"≥ {least:g}x [red]no figure[/]"
    return f"≥ {least:g}x " + ("[green]pass[/]" if r >= least else "[red]FAIL[/]")


def _value(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("---")]
    return " — ".join(lines[:2])[:300] if lines else "error"


def _last_of_scenario(results: Results, key: str) -> bool:
    keys = list(results.specs)
    index = keys.index(key)
    following = keys[index + 1] if index + 1 < len(keys) else None
    return following is not None and results.scenario_of[following] != results.scenario_of[key]


def print_table(results: Results, settings: Settings, console: Console) -> None:
    runs = f"median of {settings.runs} runs" if settings.runs > 1 else "1 run"
    s3 = settings.storage == "s3"
    caption = ("ratio = Dockyard / Distribution; ↑ higher is better, ↓ lower is better; "
               "'better' names the winner and by how much. MB = 10⁶ bytes, GB = 10⁹ bytes.")
    if s3:
        caption += (f" target: issue 10's least ratio. {settings.nodes}/1 = "
                    f"{settings.nodes} Dockyard nodes behind nginx / 1 node (no target; "
                    "server CPU includes nginx and PostgreSQL).")
    table = Table(
        title=f"Dockyard vs CNCF Distribution on {STORAGE_TITLES[settings.storage]} "
              f"({runs}{', --quick' if settings.quick else ''})",
        caption=caption,
    )
    table.add_column("#", justify="right")
    table.add_column("scenario")
    table.add_column("figure")
    table.add_column("unit")
    table.add_column("", justify="center")
    for registry in REGISTRIES:
        table.add_column(TITLES[registry], justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("better")
    if s3:
        table.add_column("target")
        table.add_column(f"{settings.nodes} nodes", justify="right")
        table.add_column(f"{settings.nodes}/1 nodes", justify="right")

    previous = ""
    for key, spec in results.specs.items():
        scenario = results.scenario_of[key]
        cls = BY_NAME[scenario]
        medians: dict[str, float | None] = {}
        cells: list[str] = []
        for registry in _columns(settings):
            series = results.series.get(key, {}).get(registry)
            medians[registry] = series.median if series else None
            if registry not in settings.registries:
                cells.append("[dim]not run[/]")
            elif medians[registry] is None:
                cells.append("[red]error[/]")
            else:
                cells.append(_value(medians[registry], spec.digits))
        r = ratio(medians["dockyard"], medians["distribution"])
        if r is None:
            ratio_cell, verdict = "—", ""
        else:
            good = dockyard_is_better(spec, r)
            factor = max(r, 1 / r) if r > 0 else float("inf")
            colour = "green" if good else "red"
            ratio_cell = f"[{colour}]{r:.2f}x[/]"
            verdict = f"[{colour}]{'Dockyard' if good else 'Distribution'} {factor:.2f}x[/]"
        extra: list[str] = []
        if s3:
            nodes = ratio(medians[CLUSTER], medians["dockyard"])
            extra = [_target_cell(key, r), cells.pop(),
                     "—" if nodes is None else f"{nodes:.2f}x"]
        table.add_row(
            str(cls.number) if scenario != previous else "",
            cls.title if scenario != previous else "",
            spec.label, spec.unit, "↑" if spec.better == "higher" else "↓",
            *cells, ratio_cell, verdict, *extra,
            end_section=_last_of_scenario(results, key),
        )
        previous = scenario
    console.print(table)

    for scenario, by_registry in results.notes.items():
        cls = BY_NAME[scenario]
        names = dict.fromkeys(name for notes in by_registry.values() for name in notes)
        for name in names:
            texts = {reg: notes[name] for reg, notes in by_registry.items() if name in notes}
            if len(set(texts.values())) == 1:
                console.print(f"[dim]{cls.number}. {cls.name} · {name}:[/] "
                              f"{next(iter(texts.values()))}", highlight=False)
                continue
            for registry, text in texts.items():
                console.print(f"[dim]{cls.number}. {cls.name} · {name} · {TITLES[registry]}:[/] "
                              f"{text}", highlight=False)
    for scenario, failed in results.errors.items():
        for registry, failures in failed.items():
            for failure in failures:
                console.print(f"[red]{BY_NAME[scenario].number}. {scenario} · "
                              f"{TITLES[registry]} failed: {_first_line(failure)}[/]",
                              highlight=False)


def to_json(results: Results, settings: Settings, meta: dict[str, Any]) -> dict[str, Any]:
    metrics = []
    for key, spec in results.specs.items():
        entry: dict[str, Any] = {
            "key": key,
            "scenario": results.scenario_of[key],
            "label": spec.label,
            "unit": spec.unit,
            "better": spec.better,
        }
        medians: dict[str, float | None] = {}
        for registry in _columns(settings):
            series = results.series.get(key, {}).get(registry)
            medians[registry] = series.median if series else None
            entry[registry] = {"median": medians[registry],
                               "runs": list(series.values) if series else []}
        entry["ratio"] = ratio(medians["dockyard"], medians["distribution"])
        if settings.storage == "s3":
            entry["target"] = S3_TARGETS.get(key)
            entry["nodes_ratio"] = ratio(medians[CLUSTER], medians["dockyard"])
        metrics.append(entry)
    return {
        "meta": {
            **meta,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "runs": settings.runs,
            "quick": settings.quick,
            "storage": settings.storage,
            "nodes": settings.nodes if settings.storage == "s3" else None,
            "registries": list(settings.registries),
            "scenarios": list(settings.scenarios),
            "dockyard_workers": settings.workers,
            "sizes": {k: v for k, v in vars(settings.sizes).items()},
        },
        "metrics": metrics,
        "notes": results.notes,
        "errors": results.errors,
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
