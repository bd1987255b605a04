"""Run the selected scenarios against each registry, each time on a fresh server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from bench import servers
from bench.config import Settings
from bench.procstats import CpuMeter
from bench.results import Outcome, Results
from bench.s3mode import S3Backend
from bench.scenarios import BY_NAME, Scenario

T = TypeVar("T")


class ScenarioFailed(RuntimeError):
    """A scenario raised against one registry; carries the server's last log lines."""


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the client is the same for both registries)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _shown(results: Results, key: str, value: float) -> str:
    spec = results.specs[key]
    return f"{spec.label} {value:.{spec.digits}f} {spec.unit}"


def run_benchmark(settings: Settings, console: Console, timeout: float,
                  backend: S3Backend | None = None) -> Results:
    """Every selected scenario against every registry; on `backend`'s S3 server and
    PostgreSQL when given (S3 mode), else each registry on its own directory."""
    results = Results()
    classes: list[type[Scenario]] = [BY_NAME[name] for name in settings.scenarios]
    for cls in classes:
        results.declare(cls.name, cls.metrics)
    base = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    started = time.monotonic()
    try:
        for run_index in range(settings.runs):
            order = settings.registries if run_index % 2 == 0 else settings.registries[::-1]
            for cls in classes:
                console.log(f"[bold]run {run_index + 1}/{settings.runs}[/] "
                            f"· {cls.number}. {cls.title}: preparing content")
                scenario = cls(settings)
                for registry in order:
                    workdir = base / f"run{run_index + 1}" / cls.name / registry
                    try:
                        outcome = _measure(scenario, registry, workdir, settings, timeout,
                                           backend)
                    except Exception as exc:  # a failing scenario must not end the benchmark
                        message = (str(exc) if isinstance(exc, ScenarioFailed)
                                   else f"{type(exc).__name__}: {exc}").strip()
                        results.record_error(cls.name, registry, message)
                        console.log(f"  [red]{registry}: {message[:2000]}[/]")
                    else:
                        results.record(cls.name, registry, outcome)
                        shown = ", ".join(_shown(results, k, v)
                                          for k, v in outcome.values.items())
                        console.log(f"  {registry}: {shown}")
                    finally:
                        if not settings.keep:
                            _free_large_files(workdir)
    finally:
        if settings.keep:
            console.log(f"data directories and server logs kept under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    console.log(f"benchmark took {time.monotonic() - started:.0f} s")
    return results


def _free_large_files(workdir: Path, threshold: int = 1 << 20) -> None:
    """Delete a finished measurement's large files now, its small ones with the rest.

    Deleting the blobs frees their page cache for the next measurement, as a long-running
    host recycles it. The many small files (tens of thousands in the listing and small-
    image scenarios) wait for the end: on ext4 without a journal (this VM's root) the
    inode allocator steps over every inode freed in the last 60-360 s, so deleting them
    between measurements would make the next registry's file creation several times
    slower, charging one registry for the other's cleanup.
    """
    for top, _dirs, files in os.walk(workdir):
        for name in files:
            path = os.path.join(top, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_size >= threshold:
                    os.unlink(path)


def _measure(scenario: Scenario, registry: str, workdir: Path, settings: Settings,
             timeout: float, backend: S3Backend | None) -> Outcome:
    with servers.running(registry, workdir, settings.workers, backend,
                         settings.nodes) as target:
        meters = {part: CpuMeter(tree) for part, tree in (target.parts or {}).items()}
        for meter in meters.values():
            meter.start()
        try:
            limit = max(timeout, scenario.min_timeout)
            outcome = run_async(asyncio.wait_for(scenario.execute(target), limit))
        except TimeoutError as exc:
            raise ScenarioFailed(f"took longer than {limit:.0f} s\n"
                                 f"--- server log tail ---\n{_tail(target.log)}") from exc
        except Exception as exc:
            raise ScenarioFailed(f"{type(exc).__name__}: {exc}\n"
                                 f"--- server log tail ---\n{_tail(target.log)}") from exc
        if meters:
            spent = ", ".join(f"{part} {meter.stop():.1f} s" for part, meter in meters.items())
            outcome.notes["CPU by part"] = f"{spent} (whole scenario, setup included)"
        return outcome
