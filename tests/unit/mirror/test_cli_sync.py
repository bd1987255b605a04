"""`dockyard sync`'s command line: bad usage exits 2 with one `Error:` line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dockyard.cli.main import main

CONFIG = "mirror:\n  - {registry: quay.io, repository: org/app}\n"


@pytest.mark.parametrize(("config", "args", "reason"), [
    ("", [], "no mirror: sources"),
    (CONFIG, ["other"], "no mirror source called 'other' (known: app)"),
    (CONFIG, ["--status", "--dry-run"], "--status cannot be used with"),
    (CONFIG, ["--status", "--prune"], "--status cannot be used with"),
    ("mirror:\n  - {registry: quay.io}\n", [], "mirror.0.repository"),
])
def test_bad_usage_exits_2_with_one_error_line(tmp_path: Path, config: str, args: list[str],
                                               reason: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(config or "log: {level: info}\n")
    result = CliRunner().invoke(main, ["sync", "--config", str(path), "--data",
                                       str(tmp_path / "data"), *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert reason in result.output, result.output
    assert "Traceback" not in result.output
