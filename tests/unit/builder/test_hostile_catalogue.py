"""`dockyard build` on catalogues that are broken or hostile: one line and exit 2
naming what is wrong, never a traceback, a hang or a read without end (each of these
printed a traceback, hung or read until memory ran out). Run as an operator runs it,
`--dry-run` against a registry nothing listens on (its look-ups only warn)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def _catalogue(root: Path, dockerfile: bytes, name: str = "Dockerfile") -> Path:
    (root / "img").mkdir(parents=True)
    (root / "catalogue.yaml").write_text("registry: 127.0.0.1:9\n")
    (root / "img" / name).write_bytes(dockerfile)
    return root


def _not_utf8(root: Path) -> None:
    _catalogue(root, b"FROM scratch\n# \xff\n")


def _template_not_utf8(root: Path) -> None:
    _catalogue(root, b"FROM scratch\n# \xff\n", "Dockerfile.template")


def _includes_itself(root: Path) -> None:
    _catalogue(root, b"FROM scratch\n{% include 'img/Dockerfile.template' %}\n",
               "Dockerfile.template")


def _ignore_range_backwards(root: Path) -> None:
    _catalogue(root, b"FROM scratch\nCOPY img /x\n")
    (root / ".dockerignore").write_text("[z-a]\n")


def _ignore_not_utf8(root: Path) -> None:
    _catalogue(root, b"FROM scratch\nCOPY img /x\n")
    (root / ".dockerignore").write_bytes(b"\xff\n")


def _dangling(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    (root / "catalogue.yaml").write_text("registry: 127.0.0.1:9\n")
    (root / "img" / "Dockerfile").symlink_to("/nonexistent-target")


def _device(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    (root / "catalogue.yaml").write_text("registry: 127.0.0.1:9\n")
    (root / "img" / "Dockerfile").symlink_to("/dev/zero")


def _includes_a_huge_file(root: Path) -> None:
    # Jinja2's own loader read an included template whole: a sparse 4 GiB file
    _catalogue(root, b"FROM scratch\n{% include 'big.txt' %}\n", "Dockerfile.template")
    with (root / "big.txt").open("wb") as f:
        f.truncate(4 << 30)


def _includes_a_device(root: Path) -> None:
    _catalogue(root, b"FROM scratch\n{% include 'zero' %}\n", "Dockerfile.template")
    (root / "zero").symlink_to("/dev/zero")


def _includes_what_is_not_there(root: Path) -> None:
    _catalogue(root, b"FROM scratch\n{% include 'nowhere.txt' %}\n", "Dockerfile.template")


def _outside(root: Path) -> None:
    _catalogue(root, b"FROM scratch\nCOPY ../../../../../../../etc/hostname /x\n")


def _outside_through_a_link(root: Path) -> None:
    _catalogue(root, b"FROM scratch\nCOPY etc/hostname /x\n")
    (root / "etc").symlink_to("/etc")


CASES: list[tuple[Callable[[Path], None], str]] = [
    (_not_utf8, "Dockerfile: not UTF-8 text (byte 15)"),
    (_template_not_utf8, "Dockerfile.template: not UTF-8 text (byte 15)"),
    (_includes_itself, "templates include each other without end"),
    (_ignore_range_backwards, ".dockerignore: '[z-a]': bad character range"),
    (_ignore_not_utf8, ".dockerignore: not UTF-8 text"),
    (_dangling, "Dockerfile: No such file or directory"),
    (_device, "Dockerfile: not a regular file"),
    (_includes_a_huge_file, "big.txt: larger than 1 MiB"),
    (_includes_a_device, "zero: not a regular file"),
    (_includes_what_is_not_there, "nowhere.txt"),
    (_outside, "outside the build context"),
    (_outside_through_a_link, "outside the build context (through a link)"),
]


def _build(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dockyard", "build", "--dry-run",
                           "--catalogue", str(root)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("make", "said"), CASES, ids=[m.__name__ for m, _ in CASES])
def test_a_broken_catalogue_is_one_line(tmp_path: Path, make: Callable[[Path], None],
                                        said: str) -> None:
    make(tmp_path / "cat")
    run = _build(tmp_path / "cat")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("Error: "), run.stderr
    assert said in run.stderr, run.stderr


@pytest.mark.parametrize("source", [".", "./", "/", "img", "img/../img", "*"])
def test_the_context_itself_and_what_is_in_it_may_be_copied(tmp_path: Path,
                                                            source: str) -> None:
    # the check of what is outside the context took `.` for the directory above it
    root = _catalogue(tmp_path / "cat", f"FROM scratch\nCOPY {source} /app\n".encode())
    run = _build(root)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr


def test_a_fifo_in_the_context_is_hashed_not_read(tmp_path: Path) -> None:
    # opening it for its key waited for a writer for good
    root = _catalogue(tmp_path / "cat", b"FROM scratch\nCOPY img /x\n")
    os.mkfifo(root / "img" / "pipe")
    run = _build(root)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
