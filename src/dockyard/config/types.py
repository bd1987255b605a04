"""The value types every config section shares: durations, byte sizes, regular
expressions. One grammar each, so `90s` or `4MiB` means the same under every key."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from dockyard.regex import compile_regex

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    """Accept `90`, `90s`, `1h30m`, `7d` as well as pydantic's own forms."""
    try:
        if isinstance(value, str) and value.strip().isdigit():
            return timedelta(seconds=int(value))
        if isinstance(value, str) and value and _DURATION.sub("", value.strip()) == "":
            return timedelta(seconds=sum(float(n) * _UNITS[u]
                                         for n, u in _DURATION.findall(value)))
    except OverflowError:  # past timedelta's 999,999,999 days
        raise ValueError(f"{value.strip()[:40]!r} is too long a duration") from None
    return value


def as_bytes(value: Any) -> Any:
    """The byte count `4MiB`, `512k`, `1G` name; anything else unchanged (a plain
    count, or what the field's own validation refuses)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b?)\s*", value.lower())
        if m:
            return int(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_")
    return value


def _compiles(value: str) -> str:
    """A regular expression RE2 can compile (`dockyard.regex`), kept as its text."""
    try:
        compile_regex(value)
    except ValueError as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `1h30m`, `7d` -> timedelta; ValueError otherwise."""
    value = _duration(text)
    if not isinstance(value, timedelta):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 10m, 1h30m, 7d)")
    return value


def _not_negative(value: timedelta) -> timedelta:
    """Refuse a negative duration: no setting means "before now" or "a while ago"."""
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


def _longer_than_zero(value: timedelta) -> timedelta:
    """Refuse zero where it makes no sense (an interval of 0 spins, an expiry of 0
    ends everything at once)."""
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


#: a duration of zero or more (`gc.grace: 0s` collects at once what nothing references)
Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_not_negative)]
#: a duration longer than zero: every interval, period, expiry, timeout and lifetime
PositiveDuration = Annotated[timedelta, BeforeValidator(_duration),
                             AfterValidator(_longer_than_zero)]
ByteSize = Annotated[int, BeforeValidator(as_bytes), Field(ge=0)]
Regex = Annotated[str, AfterValidator(_compiles)]


#: no `user:password@`: aiohttp would log in with it, and every log line, status page and
#: error naming the URL would show the password (credentials go by reference)
_HTTP_URL = re.compile(r"https?://"
                       r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?"  # compose names
                       r"|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?(?:[/?#]\S*)?")


def http_url(value: str) -> bool:
    """Whether `value` is an http(s) URL whose host and port a client can use, and
    which names no credentials."""
    m = _HTTP_URL.fullmatch(value)
    return m is not None and (m.group(1) is None or 0 < int(m.group(1)) < 65536)
