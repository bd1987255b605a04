"""TLS on the listener: one SSLContext per worker, reloaded in place.

`load_cert_chain` on the live context changes what *new* handshakes present; connections
already established (an upload in flight) keep the session they negotiated. A worker
reloads on SIGHUP and when the certificate or key file changes (checked every
`http.tls.reload_interval`), which is what an ACME client that rewrites them needs. A
reload that fails (a half-written pair) keeps the previous certificate and is retried on
the next change. The handshake and the closing exchange are bounded (`listener_timeouts`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import NamedTuple

from dockyard.config.auth import TlsSettings
from dockyard.config.settings import HttpSettings
from dockyard.config.stamps import Stamp, file_stamps

log = logging.getLogger("dockyard.tls")

#: seconds a closing TLS connection waits for the client's close_notify (asyncio's
#: default, 30, let a client that never answers hold each closed connection that long)
SHUTDOWN_TIMEOUT = 5.0


class ListenerTimeouts(NamedTuple):
    """Seconds for `loop.create_server`'s `ssl_handshake_timeout` and
    `ssl_shutdown_timeout` (None: no TLS, nothing to bound)."""

    handshake: float | None
    shutdown: float | None


def listener_timeouts(http: HttpSettings, certs: CertificateReloader | None
                      ) -> ListenerTimeouts:
    """The TLS listener's time bounds. The handshake gets `http.header_timeout`, as a
    request head does: the connection is counted and its header clock started only once
    the handshake is done, so asyncio's default (60 s) let a client that connects and
    never speaks hold a socket outside both bounds."""
    if certs is None:
        return ListenerTimeouts(None, None)
    return ListenerTimeouts(http.header_timeout.total_seconds(), SHUTDOWN_TIMEOUT)


def enabled(tls: TlsSettings) -> bool:
    return tls.certificate is not None


def check(tls: TlsSettings) -> None:
    if (tls.certificate is None) != (tls.key is None):
        raise ValueError("http.tls needs both certificate and key")
    if tls.certificate is not None:
        CertificateReloader(tls)  # loads once: a bad pair stops the start with its error


class CertificateReloader:
    def __init__(self, tls: TlsSettings) -> None:
        assert tls.certificate is not None
        assert tls.key is not None
        self.cert: Path = tls.certificate
        self.key: Path = tls.key
        self.interval = tls.reload_interval.total_seconds()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls.minimum_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
        ctx.set_alpn_protocols(["http/1.1"])
        if tls.clientcas:
            for ca in tls.clientcas:
                try:
                    ctx.load_verify_locations(cafile=str(ca))
                except (OSError, ssl.SSLError) as exc:
                    raise ValueError(f"http.tls.clientcas: {ca}: {exc}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        self.context = ctx
        self._stamp = self._stat()
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"http.tls: cannot load {self.cert} / {self.key}: {exc}") from None

    def _stat(self) -> tuple[Stamp, ...]:
        return file_stamps(self.cert, self.key)

    def reload(self) -> bool:
        self._stamp = self._stat()
        try:
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            log.error("keeping the previous certificate: cannot load %s / %s: %s",
                      self.cert, self.key, exc)
            return False
        log.info("loaded certificate %s", self.cert)
        return True

    def changed(self) -> bool:
        return self._stat() != self._stamp

    async def watch(self) -> None:
        """Reload whenever the files change, forever."""
        while True:
            await asyncio.sleep(self.interval)
            if self.changed():
                self.reload()
