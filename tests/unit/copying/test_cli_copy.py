"""`dockyard copy`'s command line: references and bad input (exit 2, one `Error:` line)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from dockyard.cli.main import main
from tests.support.images import random_layout, sha256


@pytest.mark.parametrize(("args", "reason"), [
    (["oci:", "127.0.0.1:5000/a:b"], "oci: needs a directory"),
    (["127.0.0.1:5000/Bad/Name:v1", "oci:/tmp/x:v1"], "invalid repository name"),
    (["127.0.0.1:5000/a:bad!tag", "oci:/tmp/x:v1"], "invalid tag"),
    (["ftp://host/a:v1", "oci:/tmp/x:v1"], "unknown transport"),
    (["127.0.0.1:5000/a@sha256:abc", "oci:/tmp/x:v1"], "invalid"),
    (["127.0.0.1:5000/a:v1", "127.0.0.1:5000/b@sha256:" + "0" * 64], "cannot name a digest"),
    (["--all-tags", "127.0.0.1:5000/a:v1", "127.0.0.1:5000/b"], "SRC must name a repository"),
    (["--all-tags", "127.0.0.1:5000/a", "127.0.0.1:5000/b:v1"], "DST must name a repository"),
    (["--tags", "1.*", "--tags-regex", "1", "127.0.0.1:5000/a", "127.0.0.1:5000/b"],
     "cannot be used together"),
    (["--tags-regex", "(", "127.0.0.1:5000/a", "127.0.0.1:5000/b"], "--tags-regex"),
    (["--tags-regex", r"(a)\1", "127.0.0.1:5000/a", "127.0.0.1:5000/b"],
     "no backreferences, lookaround"),
    (["--platform", "linux", "127.0.0.1:5000/a:v1", "127.0.0.1:5000/b:v1"], "OS/ARCH"),
    (["--src-creds", "nocolon", "127.0.0.1:5000/a:v1", "127.0.0.1:5000/b:v1"],
     "USER:PASSWORD"),
    (["--jobs", "0", "127.0.0.1:5000/a:v1", "127.0.0.1:5000/b:v1"], "--jobs"),
    (["127.0.0.1:5000/a@sha256:" + "0" * 64, "oci:/tmp/x"], "needs a tag"),
])
def test_bad_input_exits_2_with_one_error_line(args: list[str], reason: str) -> None:
    result = CliRunner().invoke(main, ["copy", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert reason in errors[0], result.output
    assert "Traceback" not in result.output


def test_a_missing_layout_is_one_line_and_exit_1(tmp_path: object) -> None:
    result = CliRunner().invoke(main, ["copy", f"oci:{tmp_path}/none:v1",
                                       f"oci:{tmp_path}/out:v1"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: oci:{tmp_path}/none:v1 -> oci:{tmp_path}/out: source: manifest v1: "
        f"{tmp_path}/none: not an OCI image layout (no index.json)"]


def test_a_layout_image_without_a_name_needs_a_tag(tmp_path: Path) -> None:
    # pushed untagged it would be reported copied, then freed by the collector
    layout = random_layout(tmp_path / "lay", "v1")
    index = json.loads((layout.path / "index.json").read_text())
    del index["manifests"][0]["annotations"]
    (layout.path / "index.json").write_text(json.dumps(index))
    result = CliRunner().invoke(main, ["copy", f"oci:{layout.path}", "127.0.0.1:1/app"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "needs a tag" in errors[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("entries", "reason"), [
    ([{"mediaType": "application/vnd.oci.image.manifest.v1+json"}], "has no digest"),
    ([5], "is not a JSON object"),
    ([{"digest": 123}], "has no digest"),
    ([{"digest": "sha256:nothex"}], "invalid digest"),
    ([{"digest": "sha256:" + "0" * 64, "mediaType": 7}], "mediaType"),
    ([{"digest": "sha256:" + "0" * 64, "annotations": ["v1"]}], "annotations"),
])
@pytest.mark.parametrize("src", ["oci:{lay}:v1", "oci:{lay}"])
def test_a_malformed_index_json_is_one_line_and_exit_1(
        tmp_path: Path, entries: list[object], reason: str, src: str) -> None:
    lay = tmp_path / "lay"
    lay.mkdir()
    (lay / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    result = CliRunner().invoke(main, ["copy", src.format(lay=lay), f"oci:{tmp_path}/out:v1"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: "), line
    assert reason in line, line


@pytest.mark.parametrize(("damage", "reason"), [
    ("zero", "symbolic link"),
    ("huge", "larger than 4 MiB"),
    ("fifo", "not a regular file"),
    ("index-link", "symbolic link"),
])
def test_a_layout_manifest_or_index_is_read_bounded_never_through_a_link(
        tmp_path: Path, damage: str, reason: str) -> None:
    # a manifest linked to /dev/zero (or simply huge) was read whole: MemoryError
    layout = random_layout(tmp_path / "lay", "v1")
    blob = layout.path / "blobs" / "sha256" / layout.digest.split(":")[1]
    blob.unlink()
    if damage == "zero":
        blob.symlink_to("/dev/zero")
    elif damage == "huge":
        with blob.open("wb") as out:
            out.truncate(1 << 40)  # sparse: a terabyte that takes no disk
    elif damage == "fifo":
        os.mkfifo(blob)
    else:
        index = layout.path / "index.json"
        index.rename(tmp_path / "real-index.json")
        index.symlink_to(tmp_path / "real-index.json")
    result = CliRunner().invoke(main, ["copy", f"oci:{layout.path}:v1", f"oci:{tmp_path}/out:v1"])
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: "), line
    assert reason in line, line


def test_a_damaged_blob_in_a_layout_destination_is_written_again_by_a_rerun(
        tmp_path: Path) -> None:
    # blobs renamed into place before their bytes were on disk: a crash left them short,
    # and a rerun took any file of the name for the blob
    layout = random_layout(tmp_path / "lay", "v1")
    out = tmp_path / "out"
    first = CliRunner().invoke(main, ["copy", f"oci:{layout.path}:v1", f"oci:{out}:v1"])
    assert first.exit_code == 0, first.output
    blobs = out / "blobs" / "sha256"
    damaged = [blobs / layout.layer_digests()[0].split(":")[1],
               blobs / layout.digest.split(":")[1]]
    for path in damaged:
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    again = CliRunner().invoke(main, ["copy", f"oci:{layout.path}:v1", f"oci:{out}:v2"])
    assert again.exit_code == 0, again.output
    for digest in layout.all_digests():
        assert sha256((blobs / digest.split(":")[1]).read_bytes()) == digest
