"""Run the registry: one process per worker, all on the same port (SO_REUSEPORT).

Every piece of state lives in the stores, so any worker can serve any request. The
parent process migrates the schema once, starts the workers, restarts any that dies
(a crashed worker costs only its in-flight requests; when they keep dying at start it
gives up and exits with status 1, so a service manager sees a failure) and stops them
on SIGTERM/SIGINT: each worker stops listening at once, lets its requests in flight
finish for up to `http.drain_timeout`, then exits. Workers exit with the supervisor,
even one killed -9.

Metrics: with `metrics.enabled` the server makes one multiprocess directory per run
(`metrics_dir`, emptied at start, removed at exit; those of earlier runs killed before
they could remove theirs are removed at the next start) before any metric exists, so every
worker writes there and a scrape of any worker sums them all; a dead worker's live
gauges are dropped (`mark_process_dead`) and its restart counted.

systemd (`Type=notify`, `sdnotify.py`): the supervisor says READY=1 once every worker
listens (each adds one to a shared counter when its sockets are open), RELOADING=1 and
READY=1 around a SIGHUP, STOPPING=1 when told to stop; a single worker (workers == 1,
no supervisor) says the same itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import ipaddress
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from dockyard import logs, sdnotify
from dockyard.api import tls
from dockyard.api.access import ACCESS
from dockyard.api.admission import SharedCounts, clear_row, node_table
from dockyard.api.app import CONNECTIONS, create_app, create_debug_app
from dockyard.api.connections import AccessLog
from dockyard.auth.service import AccessControl
from dockyard.auth.service import prepare as prepare_auth
from dockyard.backends import check_guard, check_upstreams, migrate_database
from dockyard.config.advice import advice
from dockyard.config.settings import ConfigError, Settings, load_settings
from dockyard.core.metrics import enable_multiprocess, metrics, process_exited
from dockyard.web import install_ui

log = logging.getLogger("dockyard.server")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, not {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_port_free(host: str, port: int) -> None:
    """Fail early and clearly when something already listens on the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"dockyard: cannot listen on {host}:{port}: {exc.strerror}") from None


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log.level, settings.log.format)


def check_access(settings: Settings, host: str) -> None:
    """Stop on a bad TLS or auth setup before any worker starts; warn when wide open."""
    tls.check(settings.http.tls)
    prepare_auth(settings.auth, settings.data_dir)
    if settings.auth.method != "none":
        AccessControl(settings.auth, settings.data_dir)  # loads users and keys once
    elif not _loopback_only(host):
        log.warning("listening on %s with auth.method none: anyone who can reach "
                    "this address can push and delete", host or "every address")


def _loopback_only(host: str) -> bool:
    """Whether `host` (an address or a name, resolved as the listener will) is only
    loopback addresses; a name was never checked, and went without the warning."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if not host:
        return False  # every address
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return True  # the listener fails on it, naming it
    return all(ipaddress.ip_address(str(a[4][0]).partition("%")[0]).is_loopback
               for a in found)


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The worker loop's handler of errors no one awaited. aiohttp's client leaves one
    when a connection to an upstream (the object store, a cache's upstream) closes while
    a request body waits for `100 Continue`: the request itself has already failed and
    been answered (a 503), and the task that was to send its body raises once more. That
    one is a line, not a traceback; anything else goes to asyncio's default handler."""
    exc, task = context.get("exception"), context.get("future")
    coro = task.get_coro() if isinstance(task, asyncio.Task) else None
    if (isinstance(exc, aiohttp.ClientConnectionError)
            and getattr(coro, "__qualname__", "") == "ClientRequest.write_bytes"):
        log.warning("an upstream request's body was not sent, its connection closed: %s",
                    exc)
        return
    loop.default_exception_handler(context)


#: where the settings came from (config file, command-line overrides): SIGHUP re-reads it
Source = tuple[str | None, dict[str, Any]]


def reloaded(running: Settings, new: Settings) -> Settings:
    """`running` with what a SIGHUP reloads taken from `new`: the log level and, the
    auth method unchanged, the access policy (`access`, `catalog`, `admin`) and the
    htpasswd file. What a worker reloads (`_hangup`) and what the supervisor starts a
    new worker with: the rest takes effect at the next restart, for all at once."""
    auth = running.auth
    if new.auth.method == auth.method:
        auth = auth.model_copy(update={"access": new.auth.access, "catalog": new.auth.catalog,
                                       "admin": new.auth.admin,
                                       "htpasswd": new.auth.htpasswd})
    return running.model_copy(update={
        "log": running.log.model_copy(update={"level": new.log.level}), "auth": auth})


def _changed(old: Any, new: Any, key: str) -> list[str]:
    """The dotted keys under `key` whose values differ between two settings dumps."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [changed for name in sorted({*old, *new}, key=str)
                for changed in _changed(old.get(name), new.get(name),
                                        f"{key}.{name}" if key else str(name))]
    return [] if old == new else [key]


def not_reloaded(running: Settings, new: Settings) -> list[str]:
    """The keys that differ in `new` and that a SIGHUP does not apply (`reloaded`):
    named in the log, so a change that waits for a restart is not taken for done."""
    return _changed(reloaded(running, new).model_dump(), new.model_dump(), "")


def _hangup(app: web.Application, certs: tls.CertificateReloader | None,
            settings: Settings, source: Source | None, alone: bool = False) -> None:
    """SIGHUP in a worker: reload the certificate, and from the configuration the log
    level, the access policy and the htpasswd file; say what was reloaded (`alone`: no
    supervisor, so this worker tells systemd too)."""
    if alone:
        sdnotify.reloading()
    reloaded: list[str] = []
    if certs is not None and certs.reload():
        reloaded.append(f"TLS certificate {settings.http.tls.certificate}")
    if source is not None:
        path, overrides = source
        try:
            new = load_settings(Path(path) if path else None, overrides=overrides)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)
            new = None
        if new is not None:
            if logging.getLogger().level != logging.getLevelName(new.log.level.upper()):
                logging.getLogger().setLevel(new.log.level.upper())
                reloaded.append(f"log level {new.log.level}")
            control = app.get(ACCESS)
            if control is not None and new.auth.method == settings.auth.method:
                reloaded.extend(control.reload(new.auth))
            waiting = not_reloaded(settings, new)
            if waiting:
                log.warning("SIGHUP: changes to %s are not reloaded: they take effect at "
                            "the next restart", ", ".join(waiting))
    log.info("SIGHUP: worker %d reloaded %s", os.getpid(), ", ".join(reloaded) or "nothing")
    if alone:
        sdnotify.ready(f"serving on {settings.http.addr}")


async def _run_worker(settings: Settings, host: str, port: int, reuse_port: bool,
                      parent: int | None, source: Source | None = None,
                      listening: Any = None, shared: SharedCounts | None = None) -> None:
    app = create_app(settings, run_migrations=False)
    install_ui(app, settings)
    connections = app[CONNECTIONS]
    if shared is not None:
        connections.share(shared)
    metrics().workers.set(1)
    # requests still running at the drain deadline are cancelled within this long
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    assert runner.server is not None
    certs = tls.CertificateReloader(settings.http.tls) if tls.enabled(settings.http.tls) else None
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_errors)
    protocol = connections.factory(
        runner.server,
        access_log=logging.getLogger("dockyard.access") if settings.log.accesslog else None,
        **({"access_log_class": AccessLog} if settings.log.format == "json" else {}),
        keepalive_timeout=settings.http.keepalive_timeout.total_seconds(),
    )
    bounds = tls.listener_timeouts(settings.http, certs)
    try:
        listener = await loop.create_server(protocol, host, port, reuse_port=reuse_port,
                                            backlog=1024,
                                            ssl=certs.context if certs else None,
                                            ssl_handshake_timeout=bounds.handshake,
                                            ssl_shutdown_timeout=bounds.shutdown)
    except OSError as exc:  # taken since `check_port_free`: said as it says it
        raise SystemExit(f"dockyard: cannot listen on {host}:{port}: {exc.strerror}"
                         ) from None
    debug_runner: web.AppRunner | None = None
    listeners = [listener]
    if settings.http.debug.addr is not None:
        debug_runner = web.AppRunner(create_debug_app(app), handle_signals=False,
                                     shutdown_timeout=1.0)
        await debug_runner.setup()
        assert debug_runner.server is not None
        dhost, dport = split_addr(settings.http.debug.addr)
        listeners.append(await loop.create_server(debug_runner.server, dhost, dport,
                                                  reuse_port=reuse_port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reloads what can be reloaded and never stops a worker; blocked until now
    # (`worker_main`), one sent during the start is taken here
    loop.add_signal_handler(signal.SIGHUP, _hangup, app, certs, settings, source,
                            parent is None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    tasks = [asyncio.create_task(certs.watch())] if certs is not None else []
    if parent is not None:
        tasks.append(asyncio.create_task(_watch_parent(parent, stop)))
    # what startup made (modules, the app, settings) lives as long as the worker: out of
    # the collector's sight, a full collection walks only what requests made (a UI page
    # of a large registry no longer pauses on it)
    gc.collect()
    gc.freeze()
    log.info("worker %d serving on %s://%s:%d", os.getpid(), "https" if certs else "http",
             host, port)
    if parent is None:
        sdnotify.ready(f"serving on {host}:{port}")
    elif listening is not None:
        with listening.get_lock():
            listening.value += 1
    await stop.wait()
    if parent is None:
        sdnotify.stopping()
    # stop accepting at once (a restart can bind the port), then let requests finish
    for server in listeners:
        server.close()
    drain = settings.http.drain_timeout.total_seconds()
    if not await connections.drain(drain):
        log.warning("worker %d: requests still running after %gs; cutting them off",
                    os.getpid(), drain)
    for task in tasks:
        task.cancel()
    if debug_runner is not None:
        await debug_runner.cleanup()
    await runner.cleanup()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop when the supervisor is gone (where PR_SET_PDEATHSIG is not available)."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's death
        await asyncio.sleep(1)
    log.warning("worker %d: the supervisor (pid %d) is gone; stopping", os.getpid(), parent)
    stop.set()


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when the supervisor dies, even by
    SIGKILL, so no orphan keeps serving (and holding the port) under PID 1."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def worker_main(settings_data: dict[str, Any], host: str, port: int, reuse_port: bool,
                parent: int | None = None, source: Source | None = None,
                listening: Any = None, shared: SharedCounts | None = None) -> None:
    """Entry point of a worker process; `parent` is the supervisor's pid, if any;
    `listening` the supervisor's shared counter of workers listening; `shared` the
    node's count of unauthenticated connections and this worker's row in it."""
    # a forked worker inherits the supervisor's handlers: until its loop installs its
    # own, SIGTERM must stop it as it stops a freshly started process; SIGHUP (a
    # logrotate or certificate hook, the supervisor passing one on) must never stop
    # it, so it stays blocked (the supervisor starts workers with it blocked) until
    # the loop's handler is in place, which then takes one that came meanwhile
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if parent is not None:
        _die_with_parent()
        if os.getppid() != parent:  # it died before the line above: nobody to serve for
            return
    settings = Settings.model_validate(settings_data)
    configure_logging(settings)
    _install_loop()
    asyncio.run(_run_worker(settings, host, port, reuse_port, parent, source, listening,
                            shared))


METRICS_PREFIX = "dockyard-metrics-"


def metrics_dir() -> Path:
    """This run's multiprocess metrics directory (private to the supervisor's pid)."""
    return Path(tempfile.gettempdir()) / f"{METRICS_PREFIX}{os.getpid()}"


def sweep_metrics_dirs() -> int:
    """Remove the metrics directories of earlier runs that were killed before they could
    (kill -9, the OOM killer, a power cut: one per start, up to megabytes each, kept in
    the temporary directory for ever); only this user's, and only where no process has
    that pid any more. Returns how many went."""
    removed = 0
    uid = os.getuid()
    for path in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*"):
        pid = path.name.removeprefix(METRICS_PREFIX)
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if path.is_symlink() or path.lstat().st_uid != uid:
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its run is over: nobody writes there any more
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except OSError:  # gone meanwhile, or a live process of another user
            continue
    return removed


def serve(settings: Settings, source: Source | None = None) -> None:
    """Start the registry and block until told to stop; `source` (config file and
    overrides) is re-read on SIGHUP."""
    configure_logging(settings)
    host, port = split_addr(settings.http.addr)
    check_port_free(host, port)
    if settings.http.debug.addr is not None:
        check_port_free(*split_addr(settings.http.debug.addr))
    check_access(settings, host)
    for line in advice(settings):
        log.warning("config: %s", line)
    check_upstreams(settings)  # a missing credential stops the start, naming its key
    check_guard(settings)
    raise_file_limit()
    asyncio.run(migrate_database(settings))
    workers = settings.http.workers or os.cpu_count() or 1
    log.info("dockyard listening on %s:%d with %d worker(s), data in %s", host, port, workers,
             settings.data_dir)
    directory = metrics_dir() if settings.metrics.enabled else None
    if directory is not None:
        if swept := sweep_metrics_dirs():
            log.info("removed %d metrics director%s of earlier runs that were killed",
                     swept, "y" if swept == 1 else "ies")
        enable_multiprocess(directory)
        metrics().start_time.set(time.time())
    try:
        if workers == 1:
            worker_main(settings.model_dump(mode="json"), host, port, False, None, source)
        else:
            Supervisor(settings, host, port, workers, source).run()
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


#: the most open files asked for when the hard limit is unlimited
FILES_WANTED = 1 << 20


def raise_file_limit() -> None:
    """Raise the soft limit of open files to the hard one (as Go's runtime does for
    Distribution): with a shell's 1,024, a few hundred idle connections from many
    addresses, each under `http.unauthenticated_connections`, used up every worker's
    descriptors and new clients were reset. The workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # a kernel cap below `wanted` (nr_open)
            log.warning("could not raise the open files limit from %d: %s", soft, exc)
            return
        log.debug("open files limit raised from %d to %d", soft, wanted)


def _start_method() -> str:
    """`fork` while this process has a single thread, else `spawn`.

    Forked workers share the supervisor's imported code until they write to it: two
    workers and the supervisor took 124 MB of PSS instead of 238 MB with `spawn`, and a
    worker was ready in 0.8 s instead of 1.3 s. Forking a process with threads can
    copy a lock some thread holds, so then each worker starts a fresh interpreter.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


class Supervisor:
    """Keeps `count` worker processes alive until SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, host: str, port: int, count: int,
                 source: Source | None = None) -> None:
        self.ctx: Any = multiprocessing.get_context(_start_method())
        #: workers listening (each adds one); READY=1 once all have
        self.listening = self.ctx.Value("i", 0)
        #: what a new worker starts from: the settings of the start, with what each
        #: SIGHUP since reloaded (`reloaded`), so a restarted worker serves as the others
        self.settings = settings
        self.source = source
        self.args = (settings.model_dump(mode="json"), host, port, True, os.getpid(), source,
                     self.listening)
        #: unauthenticated connections per address, one row per worker (`admission`)
        self.counts = node_table(count, self.ctx)
        self.counts_key = os.urandom(16)
        self.addr = f"{host}:{port}"
        self.drain = settings.http.drain_timeout.total_seconds()
        self.count = count
        self.procs: list[Any] = []
        self.stopping = False
        #: gave up on workers that kept dying at start: the process exits with status 1
        self.failed = False
        #: READY=1 was sent (all workers listened once)
        self.ready = False

    def _spawn(self, index: int) -> Any:
        """Start worker `index` with SIGHUP blocked (the mask is inherited, across exec
        too): one sent before the worker's loop handles it waits instead of killing it or
        running the supervisor's handler in the child. Its row of the connection counts
        starts at zero (a dead predecessor's connections died with it)."""
        clear_row(self.counts, index)
        shared = SharedCounts(self.counts, self.count, index, self.counts_key)
        proc = self.ctx.Process(target=worker_main, args=(*self.args, shared), daemon=False)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return proc

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _hangup(self, *_: object) -> None:
        """SIGHUP: every worker reloads what it can (`_hangup`), and workers started from
        now on (after a crash) start from it; a configuration that does not load is
        logged and changes nothing, as in the workers."""
        if self.ready:
            sdnotify.reloading()
        if self.source is not None:
            path, overrides = self.source
            try:
                new = load_settings(Path(path) if path else None, overrides=overrides)
            except ConfigError as exc:
                log.error("SIGHUP: restarted workers keep the running configuration: %s",
                          exc)
            else:
                self.settings = reloaded(self.settings, new)
                self.args = (self.settings.model_dump(mode="json"), *self.args[1:])
        for proc in self.procs:
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGHUP)
        if self.ready:
            sdnotify.ready(self._status())

    def _status(self) -> str:
        return f"serving on {self.addr} with {self.count} workers"

    def run(self) -> None:
        """Supervise until told to stop; SystemExit(1) after giving up on workers that
        keep dying at start, so systemd (`Restart=on-failure`) or a container runtime
        sees a failure, not a clean stop."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        metrics()  # the restart counter is exported (at 0) from the start
        self.procs = [self._spawn(i) for i in range(self.count)]
        started = [time.monotonic()] * self.count
        quick_deaths = 0
        while not self.stopping:
            time.sleep(0.2)
            if not self.ready and self.listening.value >= self.count:
                self.ready = True
                sdnotify.ready(self._status())
            for i, proc in enumerate(self.procs):
                if proc.is_alive() or self.stopping:
                    continue
                log.warning("worker %d exited with %s; restarting", proc.pid, proc.exitcode)
                process_exited(proc.pid)
                metrics().worker_restarts.inc()
                quick_deaths = quick_deaths + 1 if time.monotonic() - started[i] < 2 else 0
                if quick_deaths > 5:
                    log.error("workers keep dying at start; giving up")
                    self.stopping = self.failed = True
                    break
                self.procs[i] = self._spawn(i)
                started[i] = time.monotonic()
        sdnotify.stopping()
        for proc in self.procs:
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        # workers drain for up to http.drain_timeout, then take a moment to close
        deadline = time.monotonic() + self.drain + 5
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        if self.failed:
            raise SystemExit(1)
