"""How `dockyard copy` shows its progress: a rich display on a terminal (a bar per blob
and a total, with bytes/s), plain log lines otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

import click

from dockyard.units import human_bytes

if TYPE_CHECKING:
    from rich.progress import TaskID


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class LogLines:
    """One line per blob done and per note, on stderr (for logs and pipes)."""

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                 ) -> None:
        pass

    def blob_started(self, digest: str, size: int) -> None:
        pass

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        pass

    def blob_finished(self, digest: str, outcome: str, size: int) -> None:
        click.echo(f"blob {digest}: {outcome} ({human_bytes(size)})", err=True)

    def note(self, message: str) -> None:
        click.echo(message, err=True)


class RichDisplay:
    """Per-blob bars under a total bar, removed when each blob is done."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._console = Console(stderr=True, highlight=False)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(),
                                  console=self._console, transient=True)
        self._total = self._progress.add_task("total", total=0)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                 ) -> None:
        self._progress.stop()

    def blob_started(self, digest: str, size: int) -> None:
        self._tasks[digest] = self._progress.add_task(short(digest), total=size)
        total = self._progress.tasks[self._total].total or 0
        self._progress.update(self._total, total=total + size)

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        task = self._tasks.get(digest)
        if task is not None:
            self._progress.advance(task, nbytes)
        self._progress.advance(self._total, nbytes)

    def blob_finished(self, digest: str, outcome: str, size: int) -> None:
        task = self._tasks.pop(digest, None)
        if task is not None:
            self._progress.remove_task(task)
        self._console.print(f"{short(digest)} {outcome} ({human_bytes(size)})", markup=False)

    def note(self, message: str) -> None:
        self._console.print(message, markup=False)


def display() -> RichDisplay | LogLines:
    return RichDisplay() if sys.stderr.isatty() else LogLines()
