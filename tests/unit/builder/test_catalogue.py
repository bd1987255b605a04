"""Discovery, names, rendering, settings, the graph and keys of a small catalogue on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.builder.catalogue import Naming, discover
from dockyard.builder.ignore import DockerIgnore
from dockyard.builder.keys import build_key, context_files
from dockyard.builder.plan import load_graph
from dockyard.builder.settings import CatalogueError, load_settings

NAMING = Naming("reg.example", "toolforge", "t1")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    parent = "FROM {{ registry }}/{{ image_prefix }}-%s:{{ tag }}\n"
    return _write(tmp_path, {
        "macros.jinja2": "{% macro hello(p) %}LABEL image={{ p }}{% endmacro %}\n",
        "base/Dockerfile": "FROM upstream/debian:12\n",
        "python311-sssd/base/Dockerfile.template":
            "{% import 'macros.jinja2' as m %}\n" + parent % "base" +
            "{{ m.hello(image_path) }}\n{% if true %}\nCOPY {{ image_path }}/x /x\n{% endif %}\n",
        "python311-sssd/base/x": "x\n",
        "python311-sssd/web/Dockerfile.template": parent % "python311-sssd-base",
        ".hidden/Dockerfile": "FROM nothing\n",
        "catalogue.yaml": "defaults:\n  tests: ['true']\n  build_args: {A: '1'}\n"
                          "images:\n  base:\n    build_args: {B: '2'}\n    tests: []\n",
    })


def test_discovery_names_and_settings(catalogue: Path) -> None:
    images = discover(catalogue, NAMING, load_settings(catalogue))
    assert [(i.path, i.name) for i in images] == [
        ("base", "reg.example/toolforge-base:t1"),
        ("python311-sssd/base", "reg.example/toolforge-python311-sssd-base:t1"),
        ("python311-sssd/web", "reg.example/toolforge-python311-sssd-web:t1"),
    ]
    assert images[0].settings.build_args == {"A": "1", "B": "2"}
    assert images[0].settings.tests == []
    assert images[1].settings.tests == ["true"]


def test_rendering_and_graph(catalogue: Path) -> None:
    graph, rendered, parsed = load_graph(catalogue, NAMING)
    assert rendered["python311-sssd/base"] == (
        "FROM reg.example/toolforge-base:t1\nLABEL image=python311-sssd/base\n"
        "COPY python311-sssd/base/x /x\n")
    assert graph.order == ["base", "python311-sssd/base", "python311-sssd/web"]
    assert graph.nodes["base"].external == ["upstream/debian:12"]
    assert graph.select(["python311-sssd-base"]) == graph.order
    assert graph.select(["python311-sssd/base"], single=True) == ["python311-sssd/base"]
    assert graph.select(["reg.example/toolforge-python311-sssd-web:t1"]) == graph.order
    assert parsed["python311-sssd/base"].sources == ["python311-sssd/base/x"]


def test_the_tree_draws_a_chain_longer_than_the_stack(tmp_path: Path) -> None:
    # `build --graph` of a chain of a thousand images ended on a RecursionError
    depth = 1100
    files = {"i0000/Dockerfile": "FROM upstream/debian:12\n"}
    files |= {f"i{n:04d}/Dockerfile": f"FROM reg.example/toolforge-i{n - 1:04d}:t1\n"
              for n in range(1, depth)}
    graph, _, _ = load_graph(_write(tmp_path, files), NAMING)
    lines = graph.tree().splitlines()
    assert len(lines) == depth + 1
    assert lines[:3] == ["upstream/debian:12", "└── reg.example/toolforge-i0000:t1",
                         "    └── reg.example/toolforge-i0001:t1"]
    assert lines[-1] == " " * 4 * (depth - 1) + "└── reg.example/toolforge-i1099:t1"


def test_the_build_order_of_a_chain_longer_than_the_stack(tmp_path: Path) -> None:
    # each image the parent of the one before it in name order: planning the build of a
    # thousand ended on a RecursionError
    depth = 1100
    files = {f"i{depth - 1:04d}/Dockerfile": "FROM upstream/debian:12\n"}
    files |= {f"i{n:04d}/Dockerfile": f"FROM reg.example/toolforge-i{n + 1:04d}:t1\n"
              for n in range(depth - 1)}
    graph, _, _ = load_graph(_write(tmp_path, files), NAMING)
    assert graph.order == [f"i{n:04d}" for n in range(depth - 1, -1, -1)]


def test_a_cycle_far_down_a_long_chain_is_named(tmp_path: Path) -> None:
    files = {f"i{n:04d}/Dockerfile": f"FROM reg.example/toolforge-i{n + 1:04d}:t1\n"
             for n in range(1099)}
    files["i1099/Dockerfile"] = "FROM reg.example/toolforge-i1098:t1\n"
    with pytest.raises(CatalogueError, match=r"FROM cycle: i1098/Dockerfile -> "
                                             r"i1099/Dockerfile -> i1098/Dockerfile$"):
        load_graph(_write(tmp_path, files), NAMING)


def test_the_tree_draws_siblings_in_order(catalogue: Path) -> None:
    (catalogue / "python311-sssd/cli/Dockerfile").parent.mkdir(parents=True)
    (catalogue / "python311-sssd/cli/Dockerfile").write_text(
        "FROM reg.example/toolforge-python311-sssd-base:t1\n")
    graph, _, _ = load_graph(catalogue, NAMING)
    assert graph.tree().splitlines() == [
        "upstream/debian:12",
        "└── reg.example/toolforge-base:t1",
        "    └── reg.example/toolforge-python311-sssd-base:t1",
        "        ├── reg.example/toolforge-python311-sssd-cli:t1",
        "        └── reg.example/toolforge-python311-sssd-web:t1",
    ]


def test_bad_settings_name_the_file_and_key(catalogue: Path) -> None:
    (catalogue / "catalogue.yaml").write_text("images:\n  base:\n    tets: [x]\n")
    with pytest.raises(CatalogueError, match=r"catalogue.yaml: images.base.tets: Extra"):
        load_settings(catalogue)
    (catalogue / "catalogue.yaml").write_text("images:\n  nope: {}\n")
    with pytest.raises(CatalogueError, match=r"images.nope: no such image"):
        discover(catalogue, NAMING, load_settings(catalogue))


def test_template_errors_name_the_file(catalogue: Path) -> None:
    (catalogue / "base" / "Dockerfile").unlink()
    (catalogue / "base" / "Dockerfile.template").write_text("FROM {% if %}\n")
    with pytest.raises(CatalogueError, match=r"base/Dockerfile.template:1:"):
        load_graph(catalogue, NAMING)


def test_keys_follow_the_copied_files_and_not_ignored_ones(tmp_path: Path) -> None:
    root = _write(tmp_path, {"web/a": "a", "web/b.bak": "b", "web/sub/c": "c", "other": "o"})
    ignore = DockerIgnore(["**/*.bak"])
    files = context_files(root, ["web/", "other"], ignore)
    assert [name for name, _ in files] == ["other", "web/a", "web/sub/c"]

    def key() -> str:
        return build_key("FROM x\n", context_files(root, ["web/*"], ignore), {}, [], {})

    first = key()
    (root / "web" / "b.bak").write_text("changed")
    (root / "other").write_text("changed")
    assert key() == first
    (root / "web" / "sub" / "c").write_text("changed")
    assert key() != first
    assert build_key("FROM x\n", [], {"A": "1"}, [], {}) != build_key("FROM x\n", [], {}, [], {})
    assert build_key("FROM x\n", [], {}, [], {"p": "k1"}) != \
        build_key("FROM x\n", [], {}, [], {"p": "k2"})


def test_both_dockerfile_kinds_in_one_folder_is_an_error(catalogue: Path) -> None:
    (catalogue / "base" / "Dockerfile.template").write_text("FROM x\n")
    with pytest.raises(CatalogueError, match=r"both Dockerfile\.template and Dockerfile"):
        discover(catalogue, NAMING, load_settings(catalogue))


def test_graph_cycle_names_the_files(catalogue: Path) -> None:
    (catalogue / "base" / "Dockerfile").write_text(
        "FROM reg.example/toolforge-python311-sssd-web:t1\n")
    with pytest.raises(CatalogueError, match=r"FROM cycle: base/Dockerfile -> "):
        load_graph(catalogue, NAMING)
