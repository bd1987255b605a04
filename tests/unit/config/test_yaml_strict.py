"""The YAML Dockyard reads refuses a key written twice in one mapping (PyYAML kept the
last: a second `auth:` section further down replaced the first, and the registry took
anonymous pushes while `config check` said ok) and nesting past what the parser follows
(a RecursionError traceback from `config check`, `serve`, a `DOCKYARD_*` list, a
builder catalogue and an import's Distribution config). A merge key may still be
overridden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dockyard.cli.main import main
from dockyard.config.settings import load_settings
from dockyard.config.yamlfile import load_yaml

TWICE = """auth:
  method: htpasswd
  htpasswd:
    path: /etc/dockyard/htpasswd
http:
  addr: 127.0.0.1:5000
auth:
  realm: my-registry
"""
DEEP = "http: " + "[" * 600 + "]" * 600 + "\n"


def _check(path: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["config", "check", str(path)], env=env or {})
    return result.exit_code, result.output


def test_a_section_written_twice_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(TWICE)
    code, output = _check(path)
    assert code == 2, output
    assert "the key 'auth' is written twice at line 7, column 1" in output
    assert "Traceback" not in output


def test_a_merge_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("x-base: &base {addr: 127.0.0.1:5000, host: a.example}\n"
                    "http:\n  <<: *base\n  addr: 127.0.0.1:6000\n")
    # `x-base` is no setting, so load the document as the config does, through its keys
    code, output = _check(path)
    assert "written twice" not in output
    assert "x-base" in output  # refused as an unknown key, not as a duplicate
    assert code == 2


@pytest.mark.parametrize("text", [
    "base: &b {a: 1, c: 3}\nx:\n  <<: *b\n  a: 2\n",
    # an anchored mapping that overrides a merge, merged itself by a mapping read
    # first: PyYAML rewrites the anchored one in place (its merged keys in front)
    "x-common: &common\n  restart: always\nservices:\n  web:\n    deploy: &d\n"
    "      <<: *common\n      restart: never\n  worker:\n    <<: *d\n",
    "y: &y {k: 0, z: 9}\na:\n  b:\n    c: &x\n      <<: *y\n      k: 1\n"
    "d:\n  <<: *x\n  k: 2\n",
])
def test_merges_overridden_read_as_pyyaml_reads_them(text: str) -> None:
    assert load_yaml(text) == yaml.safe_load(text)


def test_nesting_past_the_parser_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(DEEP)
    code, output = _check(path)
    assert code == 2, output
    assert "nested too deeply" in output
    assert "Traceback" not in output
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    code, output = _check(empty, env={"DOCKYARD_METRICS_ALLOW_FROM": "[" * 600 + "]" * 600})
    assert code == 2, output
    assert "DOCKYARD_METRICS_ALLOW_FROM" in output
    assert "nested too deeply" in output


def test_the_builder_and_the_import_read_yaml_the_same_way(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    (catalogue / "catalogue.yaml").write_text(DEEP)
    build = subprocess.run([sys.executable, "-m", "dockyard", "build", "--dry-run",
                            "--catalogue", str(catalogue), "--registry", "127.0.0.1:9"],
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    assert build.returncode == 2, build.stderr
    assert "nested too deeply" in build.stderr
    assert "Traceback" not in build.stderr
    dist = tmp_path / "config.yml"
    dist.write_text("storage:\n  filesystem:\n    rootdirectory: /x\nstorage:\n  s3: {}\n")
    imported = subprocess.run([sys.executable, "-m", "dockyard", "import", "--data",
                               str(tmp_path / "data"), "--distribution-config", str(dist)],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    assert imported.returncode == 2, imported.stderr
    assert "the key 'storage' is written twice" in imported.stderr


def test_settings_from_a_plain_file_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("http:\n  addr: 127.0.0.1:5001\nlog:\n  level: debug\n")
    settings = load_settings(path, env={})
    assert settings.http.addr == "127.0.0.1:5001"
