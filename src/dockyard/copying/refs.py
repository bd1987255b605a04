"""Image references for `dockyard copy`: `docker://HOST/REPO[:TAG|@DIGEST]` (or the same
without `docker://`) and `oci:PATH[:TAG|@DIGEST]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid, NameInvalid
from dockyard.oci.reference import is_valid_tag, validate_name

DOCKER_HUB = "docker.io"
_DIGEST_TAIL = re.compile(r"@([a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$")


class BadReference(ValueError):
    """A reference that cannot be parsed; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class RegistryRef:
    """A repository on a registry, maybe narrowed to a tag or a digest."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str | None:
        return self.digest or self.tag

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> RegistryRef:
        return RegistryRef(self.host, self.repository, tag, digest)

    def __str__(self) -> str:
        tail = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"docker://{self.host}/{self.repository}{tail}"


@dataclass(frozen=True, slots=True)
class LayoutRef:
    """An OCI image layout directory, maybe narrowed to a tag (`ref.name`) or a digest."""

    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str | None:
        return self.digest or self.tag

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> LayoutRef:
        return LayoutRef(self.path, tag, digest)

    def __str__(self) -> str:
        tail = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"oci:{self.path}{tail}"


ImageRef = RegistryRef | LayoutRef


def parse(text: str) -> ImageRef:
    """Parse a command-line reference; raise `BadReference` with a one-line reason."""
    if text.startswith("oci:"):
        return _parse_layout(text[4:], text)
    if text.startswith("docker://"):
        return _parse_registry(text[len("docker://"):], text)
    if "://" in text or re.match(r"^[a-z-]+:[^0-9/]", text):
        raise BadReference(f"{text!r}: unknown transport (use docker://HOST/REPO[:TAG] "
                             "or oci:PATH[:TAG])")
    return _parse_registry(text, text)


def _split_reference(rest: str, text: str) -> tuple[str, str | None, str | None]:
    digest = None
    m = _DIGEST_TAIL.search(rest)
    if m:
        digest = m.group(1)
        try:
            Digest.parse(digest)
        except DigestInvalid as exc:
            raise BadReference(f"{text!r}: {exc.message}") from None
        rest = rest[:m.start()]
    tag = None
    head, sep, tail = rest.rpartition(":")
    if sep and "/" not in tail:
        if not is_valid_tag(tail):
            raise BadReference(f"{text!r}: invalid tag {tail!r}")
        rest, tag = head, tail
    return rest, tag, digest


#: a registry host as references name it: a DNS name or IPv4 address, or an IPv6 one in
#: brackets, then an optional port
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


def _port_ok(host: str) -> bool:
    port = host.rpartition(":")[2] if not host.endswith("]") else ""
    return not port.isdigit() or 0 < int(port) < 65536


def _parse_registry(rest: str, text: str) -> RegistryRef:
    name, tag, digest = _split_reference(rest, text)
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, remainder
    else:
        host, repository = DOCKER_HUB, name if sep else f"library/{name}"
    if host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _HOST.fullmatch(host) or not _port_ok(host):
        raise BadReference(f"{text!r}: invalid registry host {host!r} (HOST[:PORT], "
                           "IPv6 in brackets)")
    try:
        validate_name(repository)
    except NameInvalid:
        raise BadReference(f"{text!r}: invalid repository name {repository!r}") from None
    if not repository:
        raise BadReference(f"{text!r}: no repository")
    return RegistryRef(host, repository, tag, digest)


def _parse_layout(rest: str, text: str) -> LayoutRef:
    if not rest:
        raise BadReference(f"{text!r}: oci: needs a directory (oci:PATH[:TAG])")
    path, tag, digest = _split_reference(rest, text)
    if not path:
        raise BadReference(f"{text!r}: oci: needs a directory (oci:PATH[:TAG])")
    return LayoutRef(path, tag, digest)
