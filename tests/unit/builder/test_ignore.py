"""`.dockerignore` matching follows the engines' rules, not gitignore's."""

from __future__ import annotations

from dockyard.builder.ignore import DockerIgnore


def test_patterns_are_anchored_at_the_root() -> None:
    ignore = DockerIgnore(["*.md", "/build", "# comment", ""])
    assert ignore.excluded("README.md")
    assert not ignore.excluded("docs/README.md")  # gitignore would exclude it
    assert ignore.excluded("build/out/x")         # a folder excludes what is under it
    assert not ignore.excluded("src/build")


def test_double_star_and_exceptions_last_match_wins() -> None:
    ignore = DockerIgnore(["**/*.bak", "shared/", "!shared/keep", "web/?.txt", "a[0-9]"])
    assert ignore.excluded("x.bak")
    assert ignore.excluded("deep/down/x.bak")
    assert ignore.excluded("shared/motd")
    assert not ignore.excluded("shared/keep")
    assert ignore.excluded("web/a.txt")
    assert not ignore.excluded("web/ab.txt")
    assert ignore.excluded("a7")
    assert not ignore.excluded("ab")
