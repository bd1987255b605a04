"""`read_inside`: what the builder reads out of a mounted image (its package database,
for the SBOM) as root, on real files: symbolic links resolve inside the image, never
to a file of the host, and a read is bounded."""

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


def test_a_link_to_an_absolute_path_is_read_inside_the_image_not_the_host(
        root: Path, host_secret: Path) -> None:
    (root / "var/lib/dpkg/status").symlink_to(host_secret)
    assert read_inside(root, STATUS, 1 << 20) is None


def test_a_folder_on_the_way_that_links_out_stays_inside_the_image(
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


def test_links_resolve_inside_the_image(root: Path) -> None:
    # merged-/usr images (Wolfi, Chainguard) link /lib to usr/lib: the package
    # database is found through the link, as the image sees it
    (root / "usr" / "lib" / "apk" / "db").mkdir(parents=True)
    (root / "usr/lib/apk/db/installed").write_text("P:busybox\n")
    (root / "lib").symlink_to("usr/lib")
    assert read_inside(root, "/lib/apk/db/installed", 1 << 20) == b"P:busybox\n"
    (root / "lib").unlink()
    (root / "lib").symlink_to("/usr/lib")  # absolute: from the image's root
    assert read_inside(root, "/lib/apk/db/installed", 1 << 20) == b"P:busybox\n"


def test_dot_dot_in_a_link_stops_at_the_image_root(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("image's own\n")
    (root / "var/lib/dpkg/status").symlink_to("../../../../../../../etc/passwd")
    assert read_inside(root, STATUS, 1 << 20) == b"image's own\n"


def test_a_link_loop_is_none(root: Path) -> None:
    (root / "var/lib/dpkg/status").symlink_to("status")
    assert read_inside(root, STATUS, 1 << 20) is None
