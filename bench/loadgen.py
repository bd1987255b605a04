"""Fixed-concurrency HTTP load from C tools: a Python client would saturate a core long
before the server does.

- GET: `wrk` (epoll, multi-threaded) with a generated Lua script that sets the method and
  headers and prints wrk's summary as one JSON line.
- HEAD: `ab -i` (ApacheBench). wrk 4.1 parses every response as if it had a body, so a
  HEAD answer carrying `Content-Length` (as the protocol requires for manifests) never
  completes and wrk counts zero requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

WRK = shutil.which("wrk")
AB = shutil.which("ab")

_WRK_SCRIPT = """\
wrk.method = {method}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int
    """Completed requests, including those answered with an error status."""
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)
    """Error counts by kind; `status` counts answers outside 2xx/3xx."""
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    keepalive: int | None = None
    """Requests served on a kept-alive connection, where the tool reports it."""

    @property
    def good(self) -> int:
        return self.requests - self.errors.get("status", 0)


def missing_tools() -> list[str]:
    return [name for name, path in (("wrk", WRK), ("ab (apache2-utils)", AB)) if path is None]


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await proc.communicate()
    return proc.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def run_wrk(url: str, *, method: str, headers: dict[str, str], connections: int,
                  threads: int, seconds: float) -> LoadResult:
    """`wrk -tT -cC -dS` against `url`."""
    if WRK is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk; `make bench` does it)")
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
    )
    script = _WRK_SCRIPT.format(method=_lua_string(method), headers=header_lines)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        path = Path(tmp) / "script.lua"
        path.write_text(script)
        code, out, err = await _run(
            WRK, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(path), url,
        )
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            doc = json.loads(line[len("WRKJSON "):])
            return LoadResult(
                tool="wrk",
                requests=int(doc["requests"]),
                seconds=doc["duration_us"] / 1e6,
                errors={k: int(doc[k]) for k in ("connect", "read", "write", "status",
                                                 "timeout") if doc[k]},
                p50_ms=doc["p50_us"] / 1000,
                p99_ms=doc["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary (exit {code}):\n{out}\n{err}")


def _ab_number(pattern: str, text: str, default: float = 0.0) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else default


async def run_ab(url: str, *, head: bool, headers: dict[str, str], connections: int,
                 seconds: float) -> LoadResult:
    """`ab -k [-i] -cC -tS` against `url` (keep-alive; `-i` sends HEAD)."""
    if AB is None:
        raise RuntimeError("ab is not installed (apt-get install apache2-utils)")
    argv = [AB, "-q", "-k", "-r", f"-c{connections}", f"-t{max(1, round(seconds))}",
            "-n", "100000000", "-s", "10"]
    if head:
        argv.append("-i")
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    code, out, err = await _run(*argv, url)
    if "Complete requests:" not in out:
        raise RuntimeError(f"ab printed no summary (exit {code}):\n{out}\n{err}")
    errors = {
        "status": int(_ab_number(r"^Non-2xx responses:\s+(\d+)", out)),
        "failed": int(_ab_number(r"^Failed requests:\s+(\d+)", out)),
    }
    return LoadResult(
        tool="ab",
        requests=int(_ab_number(r"^Complete requests:\s+(\d+)", out)),
        seconds=_ab_number(r"^Time taken for tests:\s+([\d.]+)", out),
        errors={k: v for k, v in errors.items() if v},
        p50_ms=_ab_number(r"^\s+50%\s+(\d+)", out),
        p99_ms=_ab_number(r"^\s+99%\s+(\d+)", out),
        keepalive=int(_ab_number(r"^Keep-Alive requests:\s+(\d+)", out)),
    )
