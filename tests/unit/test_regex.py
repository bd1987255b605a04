"""Users' regular expressions under RE2 (`dockyard.regex`): what differs from Python's
`re` is either taken as `re` meant it (`\\Z`) or refused with a message that says what
RE2 does not do."""

from __future__ import annotations

import re

import pytest

from dockyard.regex import compile_regex


@pytest.mark.parametrize(("pattern", "text"), [
    (r"^\d+\.\d+\Z", "1.25"), (r"^\d+\.\d+\Z", "1.25\n"), (r"^\d+\.\d+\Z", "1.25x"),
    (r"a\\Z", "a\\Z"), (r"^(latest|stable)$", "stable"), (r"v[0-9]+", "xv1"),
    (r"^v1\.[0-9]+\.[0-9]+$", "v1.2.3"), (r"(?i)^RC", "rc1"),
])
def test_patterns_written_for_re_match_as_re_matches_them(pattern: str, text: str) -> None:
    assert bool(compile_regex(pattern).search(text)) == bool(re.search(pattern, text))
    assert bool(compile_regex(pattern).fullmatch(text)) == bool(re.fullmatch(pattern, text))


@pytest.mark.parametrize("pattern", [r"(a)\1", r"v(?=1)", r"a++", r"(?x) a", "a{1001}"])
def test_what_re2_does_not_do_is_refused_saying_so(pattern: str) -> None:
    with pytest.raises(ValueError, match="patterns are RE2's syntax"):
        compile_regex(pattern)


def test_a_backtracking_pattern_ends_at_once() -> None:
    # Python's re takes minutes here
    assert compile_regex(r"^(a+)+$").search("a" * 5000 + "-") is None
