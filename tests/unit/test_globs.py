"""Repository globs read one way everywhere: within a component a shell's `*`, `?` and
`[...]`; a `**` component for any number of components."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.globs import glob_matches, is_glob, matches_every_name


@pytest.mark.parametrize(("glob", "name", "expected"), [
    ("library/*", "library/busybox", True),
    ("library/*", "library/a/b", False),
    ("library/**", "library/a/b", True),
    ("library/**", "library", True),
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
    ("team/**/app", "team/a/b/app/c", False),
    ("team/*/**", "team/a", True),
    ("team/*/**", "team/a/b/c", True),
    ("team/*/**", "team", False),
    ("team/*/**", "teams/a", False),
    ("**/**", "a/b", True),
    ("**/ci/**", "org/ci/app/x", True),
    ("**/ci/**", "org/cix/app", False),
    ("toollabs-*", "toollabs-python", True),
    ("toollabs-*", "toollabs-python/extra", False),
    ("a**", "ab", True),  # `**` inside a component is a `*`
    ("a**", "a/b", False),
    ("x?z", "xyz", True),
    ("x?z", "x/z", False),
    ("[ab]x", "bx", True),
    ("[ab]x", "cx", False),
    ("[a-c]1", "b1", True),
    ("[!a]x", "bx", True),
    ("[!a]x", "ax", False),
    ("a[!b]c", "a/c", False),
    ("a.b", "axb", False),
    ("a+b", "a+b", True),
    ("team/app", "team/app", True),
    ("team/app", "team/app/x", False),
])
def test_glob_matches(glob: str, name: str, expected: bool) -> None:
    assert glob_matches(name, glob) is expected


def test_globs_anyone_may_type_do_not_backtrack_without_bound() -> None:
    # a regular expression of the whole glob did not answer the wide one within 30 s
    # (twelve `*a` against forty `a` already); each answer here is a few thousand steps
    deep = "/".join(["a"] * 120)
    assert not glob_matches(deep, "**/a*/**/a*/**/a*/**/a*/**/b")
    wide = "a" * 250
    assert not glob_matches(wide, "*a" * 40 + "b")
    assert glob_matches(wide, "*a" * 40)


def test_matches_every_name() -> None:
    assert matches_every_name("**")
    assert matches_every_name("**/**")
    assert not matches_every_name("****")  # one component: a `*`
    assert not matches_every_name("team/**")


def test_is_glob() -> None:
    assert all(is_glob(g) for g in ("team/*", "a?", "[ab]"))
    assert not is_glob("team/app")


def _reference(name: list[str], glob: list[str]) -> bool:
    """The definition, by recursion: a `**` component takes none or one more component,
    any other matches one component as a shell glob."""
    if not glob:
        return not name
    if glob[0] == "**":
        return _reference(name, glob[1:]) or (bool(name) and _reference(name[1:], glob))
    return bool(name) and fnmatch.fnmatchcase(name[0], glob[0]) and \
        _reference(name[1:], glob[1:])


_COMPONENT = st.lists(st.sampled_from(["a", "b", "*", "?", "[ab]", "[!a]"]), min_size=1,
                      max_size=3).map("".join)


@settings(max_examples=400, deadline=None)
@given(glob=st.lists(st.one_of(_COMPONENT, st.just("**")), min_size=1, max_size=5),
       name=st.lists(st.text("ab", min_size=1, max_size=3), min_size=1, max_size=5))
def test_every_way_of_matching_agrees_with_the_definition(glob: list[str],
                                                          name: list[str]) -> None:
    assert glob_matches("/".join(name), "/".join(glob)) is _reference(name, glob)
