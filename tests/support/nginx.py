"""Debian's nginx for tests: a minimal nginx.conf around a site file, started and stopped.

The site is one of the project's shipped files (deploy/nginx/) with only its addresses
rewritten by the test, so the tests prove the file operators use.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def write_conf(root: Path, site: str, *, log_format: str | None = None) -> Path:
    """`root/nginx.conf` including `site` (written to `root/site.conf`); logs under root.

    `log_format`, when given, is the access log's format (named `test`).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "site.conf").write_text(site)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / d).mkdir(exist_ok=True)
    fmt = f"    log_format test '{log_format}';\n" if log_format else ""
    access = f"{root}/access.log" + (" test" if log_format else "")
    conf = root / "nginx.conf"
    conf.write_text(f"""
user root root;
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 512; }}
http {{
{fmt}    access_log {access};
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/site.conf;
}}
""")
    return conf


def start(conf: Path, probe: str, *, timeout: float = 20) -> subprocess.Popen[bytes]:
    """Run nginx on `conf` until `probe` (a URL it serves) answers; raise with its error
    log if it does not."""
    root = conf.parent
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(root)],
                            stdout=(root / "stdout").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(probe, verify=False, timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("nginx did not start:\n" +
                                   (root / "error.log").read_text()[-3000:]) from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Graceful stop (SIGQUIT), then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
