"""Range and Content-Range parsing: huge or odd numbers are the protocol's errors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.api.ranges import parse_content_range, parse_range
from dockyard.core.uploads import Chunk
from dockyard.oci.errors import RangeInvalid

HUGE = "9" * 5000  # more digits than Python converts to an int


def test_content_range_forms() -> None:
    assert parse_content_range("0-399", 400) == Chunk(0, 399, 400)
    assert parse_content_range("bytes 0-399/1000", None) == Chunk(0, 399, None)
    assert parse_content_range(None, 5) == Chunk(length=5)


@pytest.mark.parametrize("header", [f"0-{HUGE}", f"{HUGE}-0", f"0-{2**63}", "0-٣",
                                    "bytes=x-1", "1-"])
def test_content_range_refused(header: str) -> None:
    with pytest.raises(RangeInvalid):
        parse_content_range(header, None)


def test_content_range_at_int64_max() -> None:
    assert parse_content_range(f"0-{2**63 - 1}", None).end == 2**63 - 1


@pytest.mark.parametrize(("header", "span"), [
    (f"bytes=0-{HUGE}", (0, 9)), (f"bytes=-{HUGE}", (0, 9)), (f"bytes=2-{2**64}", (2, 9)),
    ("bytes=-3", (7, 9)), ("bytes=4-", (4, 9)),
])
def test_range_with_huge_numbers_is_clamped(header: str, span: tuple[int, int]) -> None:
    assert parse_range(header, 10) == span


@pytest.mark.parametrize("header", [f"bytes={HUGE}-", f"bytes={2**63}-{2**64}", "bytes=10-",
                                    "bytes=5-4", "bytes=-0"])
def test_range_not_satisfiable(header: str) -> None:
    with pytest.raises(ValueError, match="range"):
        parse_range(header, 10)


@settings(max_examples=300, deadline=None)
@given(header=st.one_of(st.text(max_size=60), st.from_regex(
    r"(bytes[ =])?[0-9]{0,30}-[0-9]{0,30}(/[0-9*]{0,5})?", fullmatch=True)),
    length=st.one_of(st.none(), st.integers(0, 2**63)), size=st.integers(0, 2**40))
def test_only_protocol_errors(header: str, length: int | None, size: int) -> None:
    with contextlib.suppress(RangeInvalid):
        parse_content_range(header, length)
    span: tuple[int, int] | None = None
    with contextlib.suppress(ValueError):  # the caller's 416
        span = parse_range(header, size)
    assert span is None or 0 <= span[0] <= span[1] < size
