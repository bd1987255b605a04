"""`dockyard status`: one screen instead of `df` and `systemctl`.

Two sources, so it works whether or not the server runs:

- the stores named by `--config` (as `dockyard du` and `gc`): counts, storage used and
  free, the growth trend (days until full at the last 7 days' growth, from the samples
  the server's `usage.sample` job records), open upload sessions, the last collection,
  the last run of each recorded background job, and every readiness check run from
  here (the schema is not migrated by this command);
- the running server, asked over HTTP (`--url`, default the `http.debug.addr` or
  `http.addr` of the configuration): its `/metrics` give version, start time (uptime)
  and live workers. Allowed by default from the loopback addresses
  (`metrics.allow_from`); when it cannot be asked, the screen says why.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from dockyard import __version__
from dockyard.cli.common import config_option, data_option, load, run_with_registry
from dockyard.config.settings import Settings
from dockyard.config.types import http_url

if TYPE_CHECKING:
    from dockyard.core.registry import Registry


def _human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _default_url(settings: Settings) -> str:
    addr = settings.http.debug.addr or settings.http.addr
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    scheme = "https" if settings.http.tls.certificate and not settings.http.debug.addr \
        else "http"
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


async def _ask_server(url: str) -> dict[str, Any]:
    """Version, start time and workers from the server's `/metrics`."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    from dockyard.received import DOCUMENT_LIMIT, BodyTooLarge, read_at_most

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(url.rstrip("/") + "/metrics", ssl=False) as response:
            if response.status != 200:
                return {"url": url, "reachable": False,
                        "error": f"/metrics answered {response.status} (see metrics.allow_from)"}
            # `--url` may name any server: what it sends is read bounded
            text = (await read_at_most(response, DOCUMENT_LIMIT)).decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError, BodyTooLarge) as exc:
        return {"url": url, "reachable": False, "error": str(exc) or type(exc).__name__}
    out: dict[str, Any] = {"url": url, "reachable": True}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dockyard_build_info":
                    out["version"] = sample.labels.get("version")
                elif sample.name == "dockyard_start_time_seconds" and sample.value:
                    out["started_at"] = sample.value
                    out["uptime_seconds"] = time.time() - sample.value
                elif sample.name == "dockyard_workers":
                    out["workers"] = int(sample.value)
    except (ValueError, OverflowError) as exc:  # another web server (a page, a proxy)
        return {"url": url, "reachable": False,
                "error": f"/metrics is not Prometheus text (is it Dockyard?): "
                         f"{str(exc)[:80] or type(exc).__name__}"}
    return out


@click.command()
@config_option
@data_option
@click.option("--url", metavar="URL",
              help="The running server (default: from http.debug.addr or http.addr).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config: Path | None, data: Path | None, url: str | None, as_json: bool) -> None:
    """Server, storage (and days until full), counts, last collection, readiness."""
    if url is not None and not http_url(url.rstrip("/")):
        raise click.BadParameter(f"{url.split('@')[-1]!r} is not an http:// or https:// "
                                 "URL (HOST[:PORT]) without user:password@",
                                 param_hint="--url")
    settings = load(config, {"storage.filesystem.rootdirectory": data})
    server_url = url or _default_url(settings)

    async def job(registry: Registry) -> dict[str, Any]:
        readiness = await registry.health.readiness()
        state = await registry.operations.state(fresh=True)
        trend = await registry.operations.trend(state.free_bytes)
        try:
            recent = await registry.job_runs.recent(1)
        except Exception:  # a schema before job_runs (this command does not migrate)
            recent = {}
        jobs = [{"name": name, "outcome": r.outcome, "started_at": r.started_at,
                 "finished_at": r.finished_at, "summary": r.summary}
                for name, runs in sorted(recent.items()) for r in runs[:1]]
        return {"readiness": readiness.to_json(), "state": state.to_json(),
                "trend": asdict(trend) if trend is not None else None, "jobs": jobs,
                "replica": await registry.replica.standby()}

    doc = run_with_registry(settings, job, migrate=False, existing=True)
    doc = {"version": __version__, "server": asyncio.run(_ask_server(server_url)), **doc}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print(doc)
    if doc["readiness"]["status"] != "ready":
        raise SystemExit(1)


def _replica_line(r: dict[str, Any]) -> str:
    """A replica's state as its follower last reported it, with how long ago."""
    head = f"replica    of {r['primary']}: "
    if r.get("promoted"):
        return head + "promoted (no longer following)"
    state = r.get("state")
    if state is None:
        return head + "no report yet (the follower has not run)"
    line = head + str(state)
    if state == "comparing" and r.get("repositories"):
        line += f", {r.get('repositories_compared', 0)} of {r['repositories']} repositories"
    if r.get("events_behind") is not None:
        behind = r.get("seconds_behind")
        line += (f", {r['events_behind']} events"
                 + (f" ({_ago(float(behind))})" if behind is not None else "") + " behind")
    if r.get("alive_at") is not None:
        line += f"; follower seen running {_ago(time.time() - float(r['alive_at']))} ago"
    if state == "error" and r.get("last_error"):
        line += f": {str(r['last_error']).splitlines()[0][:200]}"
    return line


def _print(doc: dict[str, Any]) -> None:
    console = Console(highlight=False)
    server = doc["server"]
    if server["reachable"]:
        console.print(f"server     {server['url']}: version {server.get('version', '?')}, "
                      f"up {_ago(server.get('uptime_seconds', 0))}, "
                      f"{server.get('workers', '?')} worker(s)")
    else:
        console.print(f"server     {server['url']}: not reachable ({server['error']})")
    s = doc["state"]
    trend = doc["trend"]
    if s["total_bytes"] is not None:
        line = (f"storage    {_human(s['used_bytes'])} used, {_human(s['free_bytes'])} free "
                f"of {_human(s['total_bytes'])}; blobs hold {_human(s['blob_bytes'])}")
    else:
        line = f"storage    blobs hold {_human(s['blob_bytes'])} (the driver reports no free space)"
    console.print(line)
    if trend is None:
        console.print("trend      not enough samples yet (one every 10 minutes, over an hour)")
    else:
        days = trend["days_until_full"]
        console.print(f"trend      {_human(trend['bytes_per_day'])}/day over "
                      f"{_ago(time.time() - trend['since'])}: "
                      + (f"full in {days:.1f} days" if days is not None else "not growing"))
    console.print(f"objects    {s['repositories']} repositories, {s['tags']} tags, "
                  f"{s['manifests']} manifests, {s['blobs']} blobs; "
                  f"{s['upload_sessions']} upload sessions open")
    last = s["last_collection"]
    if last is None:
        console.print("collection none recorded")
    else:
        console.print(f"collection {_ago(time.time() - last['started_at'])} ago, "
                      f"{_human(last['bytes_freed'])} freed in {last['duration']:.1f}s"
                      + (f", {last['failed']} steps failed" if last["failed"] else ""))
    replica = doc["replica"]
    if replica is not None:
        console.print(_replica_line(replica), soft_wrap=True)
    for job in doc["jobs"]:
        summary = job["summary"].splitlines()[0][:100] if job["summary"] else ""
        console.print(f"job        {job['name']}: {job['outcome']} "
                      f"{_ago(time.time() - job['finished_at'])} ago"
                      + (f" ({summary})" if summary else ""), soft_wrap=True)
    table = Table(title=f"readiness: {doc['readiness']['status']}")
    for column in ("check", "state", "latency", "detail"):
        table.add_column(column)
    for check in doc["readiness"]["checks"]:
        table.add_row(check["name"], check["status"], f"{check['latency_ms']:.1f} ms",
                      check["detail"])
    console.print(table)
