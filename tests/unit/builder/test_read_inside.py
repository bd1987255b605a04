"""`read_inside`: what the builder reads out of a mounted image (its package database,
for the SBOM) as root, on real files: no symbolic link is followed, so an image cannot
point the builder at a host file, and a read is bounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.builder.engine import EngineError, read_inside

STATUS = "/var/lib/dpkg/status"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "var" / "lib" / "dpkg").mkdir(parents=True)
    return tmp_path / "root"


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "host-shadow"
    secret.write_text("root:$6$host-secret\n")
    return secret


def test_a_regular_file_is_read(root: Path) -> None:
    (root / "var/lib/dpkg/status").write_text("Package: zlib1g\n")
    assert read_inside(root, STATUS, 1 << 20) == b"Package: zlib1g\n"


def test_a_file_that_is_a_link_out_of_the_image_is_not_followed(
        root: Path, host_secret: Path) -> None:
    (root / "var/lib/dpkg/status").symlink_to(host_secret)
    assert read_inside(root, STATUS, 1 << 20) is None


def test_a_folder_on_the_way_that_is_a_link_is_not_followed(
        root: Path, host_secret: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "lib" / "dpkg"
    elsewhere.mkdir(parents=True)
    (elsewhere / "status").symlink_to(host_secret)
    (elsewhere / "real").write_text("outside")
    (root / "var" / "lib" / "dpkg").rmdir()
    (root / "var" / "lib").rmdir()
    (root / "var" / "lib").symlink_to(tmp_path / "elsewhere" / "lib")
    assert read_inside(root, STATUS, 1 << 20) is None
    assert read_inside(root, "/var/lib/dpkg/real", 1 << 20) is None


def test_dot_dot_absent_fifo_and_folder_are_none(root: Path) -> None:
    os.mkfifo(root / "var/lib/dpkg/status")  # opening it must not block
    assert read_inside(root, STATUS, 1 << 20) is None
    assert read_inside(root, "/var/lib/../../../etc/passwd", 1 << 20) is None
    assert read_inside(root, "/var/lib/apk/db/installed", 1 << 20) is None
    assert read_inside(root, "/var/lib", 1 << 20) is None


def test_a_file_past_the_limit_is_an_error(root: Path) -> None:
    (root / "var/lib/dpkg/status").write_bytes(b"x" * 2048)
    with pytest.raises(EngineError, match="larger than"):
        read_inside(root, STATUS, 1024)
