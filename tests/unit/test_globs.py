"""Repository globs read one way everywhere: `*` and `?` within a path component, `**`
across components, `[...]` one character other than `/`."""

from __future__ import annotations

import pytest

from dockyard.globs import compile_glob, glob_matches, is_glob


@pytest.mark.parametrize(("glob", "name", "expected"), [
    ("library/*", "library/busybox", True),
    ("library/*", "library/a/b", False),
    ("library/**", "library/a/b", True),
    ("library/**", "libraryx/a", False),
    ("*", "app", True),
    ("*", "team/app", False),
    ("**", "team/sub/app", True),
    ("**/app", "app", True),
    ("**/app", "team/sub/app", True),
    ("**/app", "team/xapp", False),
    ("team/**/app", "team/app", True),
    ("team/**/app", "team/a/b/app", True),
    ("team/**/app", "teamx/app", False),
    ("toollabs-*", "toollabs-python", True),
    ("toollabs-*", "toollabs-python/extra", False),
    ("x?z", "xyz", True),
    ("x?z", "x/z", False),
    ("[ab]x", "bx", True),
    ("[ab]x", "cx", False),
    ("[a-c]1", "b1", True),
    ("[!a]x", "bx", True),
    ("[!a]x", "ax", False),
    ("a[!b]c", "a/c", False),
    ("a[/]c", "a/c", False),
    ("[]a]", "]", True),
    ("[!]]", "]", False),
    ("[^]", "^", True),
    ("a[", "a[", True),
    ("a.b", "axb", False),
    ("a+b", "a+b", True),
])
def test_glob_matches(glob: str, name: str, expected: bool) -> None:
    assert glob_matches(name, glob) is expected


def test_a_pattern_is_compiled_once() -> None:
    assert compile_glob("team/**") is compile_glob("team/**")


def test_is_glob() -> None:
    assert all(is_glob(g) for g in ("team/*", "a?", "[ab]"))
    assert not is_glob("team/app")
