"""The Jinja2 environment: templates from the package, autoescaping always on, filters."""

from __future__ import annotations

import time
import urllib.parse

import jinja2

from dockyard.units import human_bytes


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab`: the algorithm and the first 12 hex digits."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest[:19]


def when(ts: float | None) -> str:
    """A UNIX time as UTC, to the minute; an em dash for never."""
    if ts is None:
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def took(seconds: float) -> str:
    """A duration, short: `0.4 s`, `12 s`, `3 min 5 s`, `2 h 10 min`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def node(holder: str) -> str:
    """A lease holder (`host:pid:random:place`) as `host:pid`."""
    return ":".join(holder.split(":")[:2])


def path_quote(text: str) -> str:
    """A repository name or tag for a URL path (slashes kept: names contain them)."""
    return urllib.parse.quote(text, safe="/")


def polyline(values: list[float], width: float, height: float, pad: float = 4.0) -> str:
    """SVG `points` drawing `values` left to right, scaled to fill `width` x `height`
    (the largest at the top, zero at the bottom); one value is a flat line."""
    if not values:
        return ""
    top = max(values) or 1.0
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    step = inner_w / (len(values) - 1) if len(values) > 1 else 0.0
    points = [(pad + i * step, pad + inner_h - v / top * inner_h) for i, v in enumerate(values)]
    if len(points) == 1:
        points.append((pad + inner_w, points[0][1]))
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dockyard.web", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined)
    env.filters.update(bytes=human_bytes, short=short_digest, when=when, ago=ago,
                       took=took, node=node, pq=path_quote)
    env.globals["polyline"] = polyline
    return env
