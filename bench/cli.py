"""Command line of `python -m bench`."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import loadgen
from bench.config import CLUSTER, REGISTRIES, S3_SCENARIOS, STORAGES, Settings, sizes_for
from bench.registry import MANIFEST_ACCEPT
from bench.report import print_table, to_json, write_json
from bench.results import Results
from bench.runner import run_benchmark
from bench.s3mode import running_backend
from bench.scenarios import ALL, BY_NAME
from bench.servers import distribution_version


def _scenarios(text: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            return tuple(s.name for s in ALL)
        if part not in BY_NAME:
            choices = ", ".join(f"{s.number}/{s.name}" for s in ALL)
            raise argparse.ArgumentTypeError(f"unknown scenario {part!r} (choose from {choices})")
        names.append(BY_NAME[part].name)
    order = [s.name for s in ALL]
    return tuple(sorted(set(names), key=order.index))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    scenario_help = "; ".join(f"{s.number}/{s.name}: {s.title}" for s in ALL)
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Dockyard against CNCF Distribution on this machine: both "
                    "registries are started fresh for every scenario and driven alike.",
    )
    p.add_argument("--scenarios", type=_scenarios, default=tuple(s.name for s in ALL),
                   help=f"comma-separated subset, by number or name (default all): "
                        f"{scenario_help}")
    p.add_argument("--runs", type=_positive_int, default=1,
                   help="repeat every scenario N times and report medians (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="scaled-down sizes and durations, for a smoke test")
    p.add_argument("--json", metavar="FILE", type=Path, default=None,
                   help="also write the results (every run, medians, notes) as JSON")
    p.add_argument("--storage", choices=(*STORAGES, "both"), default="both",
                   help="fs: each registry on its own directory; s3: both on one S3 server "
                        f"(SeaweedFS), Dockyard's metadata in PostgreSQL, scenarios "
                        f"{', '.join(S3_SCENARIOS)} only (default both, fs first)")
    p.add_argument("--nodes", type=_positive_int, default=3,
                   help="S3 mode: Dockyard nodes behind nginx compared with one node "
                        "(default 3; 1 skips the cluster)")
    p.add_argument("--only", choices=(*REGISTRIES, CLUSTER, "both"), default="both",
                   help="run against one registry only (default both; cluster: S3 mode)")
    p.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                   help="Dockyard worker processes (default: CPU count)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="load duration per method in scenario 4 (default 20, 3 with --quick)")
    p.add_argument("--verify", action="store_true",
                   help="hash every pulled byte and check it against the digest (client CPU)")
    p.add_argument("--keep", action="store_true",
                   help="keep data directories and server logs (path printed at the end)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up on one scenario against one registry after this long")
    return p


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM (a timeout, `kill`) unwinds like Ctrl-C: the servers a scenario started are
    # stopped on the way out instead of being left running (and measured by the next run)
    signal.signal(signal.SIGTERM, _terminated)
    console = Console()
    if not console.is_terminal or console.width < 150:
        console = Console(width=150)
    base = Settings(
        sizes=sizes_for(args.quick, args.duration),
        scenarios=args.scenarios,
        registries=(),
        runs=args.runs,
        quick=args.quick,
        workers=args.workers,
        verify=args.verify,
        keep=args.keep,
        nodes=args.nodes,
    )
    missing = loadgen.missing_tools()
    if "manifest" in base.scenarios and missing:
        console.print(f"[red]{' and '.join(missing)} not installed: apt-get install wrk "
                      "apache2-utils (make bench does it)[/]")
        return 2
    console.log(f"{platform.node()}: {os.cpu_count()} CPUs; Distribution "
                f"{distribution_version()}; Dockyard --workers {base.workers}; "
                f"scenarios {', '.join(base.scenarios)}")
    failed = False
    documents: dict[str, Any] = {}
    for storage in STORAGES if args.storage == "both" else (args.storage,):
        settings = _mode(base, storage, args.only, console)
        if settings is None:
            continue
        results = _run_mode(settings, console, args.timeout)
        failed = failed or bool(results.errors)
        meta = {"distribution_version": distribution_version(), "cpus": os.cpu_count(),
                "manifest_accept": MANIFEST_ACCEPT}
        documents[storage] = to_json(results, settings, meta)
    if args.json is not None:
        write_json(args.json, documents)
        console.log(f"results written to {args.json}")
    return 1 if failed else 0


def _mode(base: Settings, storage: str, only: str, console: Console) -> Settings | None:
    """The settings of one storage mode: its scenarios and registries, or None if the
    selection leaves nothing to run in it."""
    scenarios = base.scenarios
    registries: tuple[str, ...] = REGISTRIES
    if storage == "s3":
        skipped = [name for name in scenarios if name not in S3_SCENARIOS]
        scenarios = tuple(name for name in scenarios if name in S3_SCENARIOS)
        if skipped:
            console.log(f"S3 mode runs {', '.join(S3_SCENARIOS)} only; "
                        f"not {', '.join(skipped)}")
        if base.nodes > 1:
            registries = (*REGISTRIES, CLUSTER)
    if only != "both":
        registries = tuple(r for r in registries if r == only)
    if not scenarios or not registries:
        return None
    return replace(base, storage=storage, scenarios=scenarios, registries=registries)


def _run_mode(settings: Settings, console: Console, timeout: float) -> Results:
    """Run one storage mode and print its table; S3 mode first starts SeaweedFS and
    PostgreSQL, shared by every measurement (each gets a fresh bucket and database)."""
    with contextlib.ExitStack() as stack:
        backend = None
        if settings.storage == "s3":
            console.log("S3 mode: starting SeaweedFS and PostgreSQL")
            backend = stack.enter_context(running_backend())
        results = run_benchmark(settings, console, timeout, backend)
    print_table(results, settings, console)
    return results
