"""TLS trust for a registry as podman, skopeo and docker have it: per-host `certs.d`.

A registry with a private CA, or one asking for a client certificate, is set up once
per machine in a directory named after it (`HOST[:PORT]`): `*.crt` files are CAs
trusted besides the system's, and each `NAME.cert` with its `NAME.key` is a client
certificate offered to it. The directory is the first that exists of
`$HOME/.config/containers/certs.d/HOST`, `/etc/containers/certs.d/HOST` and
`/etc/docker/certs.d/HOST` (containers/image's order), or the one a command names
(`dockyard copy --src-cert-dir`, skopeo's `--cert-dir`).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yarl import URL

log = logging.getLogger("dockyard.remote")

SYSTEM_CERTS_D = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


class CertDirError(ValueError):
    """A certificate directory holds a file that cannot be used (named in the message);
    a ValueError, as the other settings a client is built from that cannot be used."""


def certs_dir(host: str) -> Path | None:
    """The per-host directory for `host` (`HOST[:PORT]`), or None when there is none;
    one this process may not read is passed over, as containers/image does."""
    home = os.environ.get("HOME")
    roots = ([Path(home) / ".config" / "containers" / "certs.d"] if home else []) + \
        list(SYSTEM_CERTS_D)
    for root in roots:
        directory = root / host
        if os.path.isdir(directory) and os.access(directory, os.R_OK | os.X_OK):
            return directory
    return None


def host_of(url: str) -> str:
    """`HOST[:PORT]` of a base URL as a `certs.d` directory names it (IPv6 bracketed)."""
    parsed = URL(url)
    host = parsed.raw_host or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parsed.explicit_port}" if parsed.explicit_port else host


def tls_for(host: str, *, verify: bool = True, cert_dir: Path | None = None
            ) -> ssl.SSLContext | bool:
    """What `aiohttp` takes as `ssl=` for `host`: True (the system's CAs, aiohttp's own
    context) or False (no verification) when no directory adds anything, else a context
    with the directory's CAs and client certificates (offered without verification too,
    as skopeo's `--tls-verify=false` does). As containers/image: a `*.crt` holding no
    certificate is passed over with a warning; a client certificate that cannot be
    used raises `CertDirError`, as does an unreadable file or a named directory."""
    directory = cert_dir if cert_dir is not None else certs_dir(host)
    if directory is None:
        return verify
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError as exc:
        raise CertDirError(f"{directory}: {exc.strerror}") from None
    cas = [n for n in names if n.endswith(".crt")] if verify else []
    clients = [n for n in names if n.endswith(".cert")]
    if not cas and not clients:
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for name in cas:
        try:
            context.load_verify_locations(cafile=str(directory / name))
        except ssl.SSLError as exc:  # no PEM certificate in it (empty, DER, stray)
            log.warning("%s: no certificate in it (%s); passed over", directory / name,
                        exc.reason or exc)
        except OSError as exc:
            raise CertDirError(f"{directory / name}: cannot be read: {exc.strerror}"
                               ) from None
    for name in clients:
        key = directory / (name.removesuffix(".cert") + ".key")
        if not key.is_file():
            raise CertDirError(f"{directory / name}: client certificate without its "
                               f"key {key.name}")
        with _loading(directory / name):
            context.load_cert_chain(str(directory / name), str(key), password=_no_password)
    return context


def _no_password() -> str:
    """An encrypted key would make OpenSSL prompt on the terminal (a server has none)."""
    raise CertDirError("an encrypted private key is not supported")


@contextmanager
def _loading(path: Path) -> Iterator[None]:
    """Turn a failure to load `path` into a `CertDirError` naming it."""
    try:
        yield
    except CertDirError as exc:
        raise CertDirError(f"{path}: {exc}") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise CertDirError(f"{path}: cannot be used: {reason}") from None
