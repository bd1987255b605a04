"""Progress of a build: a live rich table on a terminal, plain lines otherwise, and the
summary table at the end."""

from __future__ import annotations

import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.table import Table

_STYLE = {"queued": "dim", "pulling": "cyan", "building": "yellow", "testing": "magenta",
          "built": "green", "pushing": "cyan", "pushed": "bold green", "skipped": "blue",
          "kept": "blue",
          "failed": "bold red"}


class Display:
    """Receives state changes of images and shows them."""

    def __init__(self, names: dict[str, str], *, stream: IO[str] | None = None,
                 live: bool | None = None) -> None:
        self.console = Console(file=stream, highlight=False)
        self.live_mode = self.console.is_terminal if live is None else live
        self.names = names
        self.state = {p: "queued" for p in names}
        self.detail = {p: "" for p in names}
        self.started: dict[str, float] = {}
        self.elapsed: dict[str, float] = {}
        self._live: Live | None = None

    def __enter__(self) -> Display:
        if self.live_mode:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4,
                              get_renderable=self._table)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, path: str, state: str, detail: str = "") -> None:
        now = time.monotonic()
        if state in ("building", "pulling") and path not in self.started:
            self.started[path] = now
        if path in self.started:
            self.elapsed[path] = now - self.started[path]
        self.state[path] = state
        self.detail[path] = detail
        if not self.live_mode:
            elapsed = self.elapsed.get(path)
            took = f" ({elapsed:.1f}s)" if elapsed is not None and state in (
                "built", "failed", "pushed") else ""
            extra = f": {detail}" if detail else ""
            self.console.print(f"{self.names[path]}: {state}{took}{extra}", soft_wrap=True)

    def _table(self) -> Table:
        table = Table(box=None, show_header=False)
        now = time.monotonic()
        for path, name in self.names.items():
            state = self.state[path]
            running = state in ("building", "testing", "pulling", "pushing")
            took = now - self.started[path] if running and path in self.started else \
                self.elapsed.get(path)
            table.add_row(name, f"[{_STYLE.get(state, '')}]{state}[/]",
                          f"{took:.1f}s" if took is not None else "", self.detail[path])
        return table

    def summary(self, rows: list[tuple[str, str, str, str]]) -> None:
        """The closing table: image, result, digest, time."""
        table = Table(title="dockyard build", show_lines=False)
        for col in ("image", "result", "digest", "time"):
            table.add_column(col)
        for name, state, digest, took in rows:
            table.add_row(name, f"[{_STYLE.get(state, '')}]{state}[/]", digest, took)
        self.console.print(table)
