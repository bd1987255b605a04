"""Record what a registry answers to a request sequence, in a form two registries compare by.

A *sequence* is a function that takes a `Session` and makes requests through it. Every request
is a named step; the session keeps one `Observation` per step: the status, the headers that
matter (normalised so that two correct registries give equal values), the OCI error codes of a
JSON error body and, where a step asks for it, a value taken from the body (a digest of the
bytes, a tag list). Running the same sequence against CNCF Distribution and against Dockyard and
comparing the two lists step by step shows exactly where they part.

Normalisation rules (see `Session.request`):

- `Location`: only its path shape is kept. An absolute URL is cut to its path; an upload
  session URL becomes `/v2/<name>/blobs/uploads/<session>` (its id and query are the
  server's business); other paths are kept as they are (repository names are the same on
  both servers, so blob and manifest locations compare exactly).
- `Docker-Upload-UUID`, `ETag`: presence only.
- `Docker-Content-Digest`, `Range`, `Content-Range`, `Docker-Distribution-API-Version`:
  the value.
- `Content-Length`: on 2xx answers only (error bodies are free text); the value for blobs and
  manifests and for empty bodies, only "non-zero" for other bodies (JSON lists).
- `Content-Type`: the value on 2xx answers to GET/HEAD of a blob or manifest; the media type
  without parameters on error answers that carry a body.
- `Link`: path plus the sorted query parameters plus `rel`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.support.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)
from tests.support.servers import Server

#: What a real client (docker, containerd, oras) sends when it pulls a manifest.
ACCEPT_ALL_MANIFESTS = {"Accept": ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST,
                                             DOCKER_LIST])}

#: Header names compared, in the order they are shown in a failure message.
COMPARED_HEADERS = (
    "docker-distribution-api-version",
    "docker-content-digest",
    "content-length",
    "content-type",
    "content-range",
    "range",
    "location",
    "docker-upload-uuid",
    "etag",
    "link",
)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SequenceAborted(Exception):
    """A step did not give what the next steps need (no Location, say): the rest is skipped."""


@dataclass(frozen=True)
class Observation:
    """What one step answered, normalised for comparison."""

    step: str
    status: int
    headers: tuple[tuple[str, str | None], ...]
    codes: tuple[str, ...] | None
    body: Any = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        out.update({f"header {k}": v for k, v in self.headers})
        out["error codes"] = self.codes
        out["body"] = self.body
        return out

    def short(self) -> str:
        parts = [str(self.status)]
        parts += [f"{k}={v}" for k, v in self.headers if v is not None]
        if self.codes:
            parts.append("codes=" + ",".join(self.codes))
        if self.body is not None:
            parts.append(f"body={self.body!r}")
        return " ".join(parts)


@dataclass
class Reply:
    """A response as a step sees it (body read even when the server framed it wrongly)."""

    status: int
    headers: httpx.Headers
    content: bytes
    truncated: bool
    url: str

    @property
    def location(self) -> str:
        """The Location header resolved against the request URL (what a client follows)."""
        value = self.headers.get("location")
        if not value:
            raise SequenceAborted(f"no Location header in a {self.status} answer")
        return str(httpx.URL(self.url).join(value))

    def json(self) -> Any:
        return json.loads(self.content)


def error_codes(content: bytes) -> tuple[str, ...] | None:
    """The `code` of every entry of an OCI error body, or None when the body is not one."""
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        return None
    return tuple(str(e.get("code")) for e in doc["errors"] if isinstance(e, dict))


def _path_of(value: str) -> str:
    parts = urlsplit(value)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def normalise_location(value: str | None) -> str | None:
    if value is None:
        return None
    path = urlsplit(value).path
    if "/blobs/uploads/" in path:
        head, _, _ = path.partition("/blobs/uploads/")
        return f"{head}/blobs/uploads/<session>"
    return path


def normalise_link(value: str | None) -> str | None:
    """`</v2/_catalog?last=a&n=2>; rel="next"` → `/v2/_catalog?last=a&n=2 rel=next`."""
    if value is None:
        return None
    target, _, params = value.partition(";")
    target = target.strip().removeprefix("<").removesuffix(">")
    parts = urlsplit(target)
    query = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(parts.query)))
    rel = params.strip().replace(" ", "").replace('"', "")
    return f"{parts.path}?{query} {rel}"


def link_target(value: str | None) -> str | None:
    """The URL path and query inside a Link header."""
    if value is None:
        return None
    return value.partition(";")[0].strip().removeprefix("<").removesuffix(">")


def _is_content_path(path: str) -> bool:
    """A blob or manifest URL (`/v2/<name>/blobs/<digest>`, `/v2/<name>/manifests/<ref>`)."""
    return ("/manifests/" in path or "/blobs/" in path) and "/blobs/uploads/" not in path


def _length(value: str | None, ok: bool, content: bool) -> str | None:
    """Blob and manifest lengths compare exactly; other bodies (JSON lists) only as empty or not.

    Error answers are not compared at all: their bodies are free text.
    """
    if not ok or value is None or content or value == "0":
        return value if ok else None
    return "non-zero"


def body_digest(reply: Reply) -> str:
    return digest_of(reply.content)


def json_field(name: str, *, sort: bool = False) -> Callable[[Reply], Any]:
    """Take one field of a JSON body; `null` and a missing field read as an empty list."""

    def take(reply: Reply) -> Any:
        try:
            doc = reply.json()
        except ValueError:
            return "<not json>"
        value = doc.get(name) if isinstance(doc, dict) else None
        value = [] if value is None else value
        return sorted(value) if sort and isinstance(value, list) else value

    return take


@dataclass
class Session:
    """One run of one sequence against one server; `observations` is what it recorded."""

    server: Server
    prefix: str
    observations: list[Observation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.server.url, timeout=60.0,
                                   follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def repo(self, name: str) -> str:
        """A repository name of this run (the same on both servers)."""
        return f"{self.prefix}/{name}"

    # -- requests ---------------------------------------------------------------------------

    def request(
        self,
        step: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        params: Mapping[str, str | int] | None = None,
        ignore: Iterable[str] = (),
        same_codes: Iterable[str] = (),
        body: Callable[[Reply], Any] | None = None,
    ) -> Reply:
        """Make one request and record it as `step`.

        `url` may be a path or an absolute URL (a Location). `params` are merged into the
        query the URL already has. `ignore` names headers not to compare on this step
        ("codes" for the error codes);
        `same_codes` is a set of error codes the spec lets a registry choose between (they
        are recorded as one label); `body` takes a comparable value from the response.
        """
        target = httpx.URL(url)
        if params:
            target = target.copy_merge_params(dict(params))
        if isinstance(content, bytes | bytearray):
            stream_content: Any = bytes(content)
        elif content is None:
            stream_content = None
        else:
            stream_content = iter(content)
        with self.client.stream(method, target, headers=dict(headers or {}),
                                content=stream_content) as response:
            truncated = False
            received: list[bytes] = []
            try:
                for piece in response.iter_bytes():
                    received.append(piece)
            except httpx.RemoteProtocolError:
                # Distribution 2.8 frames its 416 answers wrongly (Content-Length of the
                # whole blob, a short text body); keep what arrived.
                truncated = True
            data = b"".join(received)
            reply = Reply(response.status_code, response.headers, data, truncated,
                          str(response.request.url))
        self.observations.append(self._observe(step, method, target.path, reply,
                                               set(ignore), set(same_codes), body))
        return reply

    def raw(self, step: str, method: str, path: str, *, ignore: Iterable[str] = (),
            same_codes: Iterable[str] = ()) -> Reply:
        """Send `path` byte for byte (httpx would resolve `..` before sending it)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.putheader("Content-Length", "0")
            conn.endheaders()
            resp = conn.getresponse()
            data = resp.read()
            reply = Reply(resp.status, httpx.Headers(resp.getheaders()), data, False,
                          self.server.url + path)
        finally:
            conn.close()
        self.observations.append(self._observe(step, method, path, reply, set(ignore),
                                               set(same_codes), None))
        return reply

    def _observe(self, step: str, method: str, path: str, reply: Reply, ignore: set[str],
                 same_codes: set[str], body: Callable[[Reply], Any] | None) -> Observation:
        h = reply.headers
        ok = 200 <= reply.status < 300
        values: dict[str, str | None] = {
            "docker-distribution-api-version": h.get("docker-distribution-api-version"),
            "docker-content-digest": h.get("docker-content-digest"),
            "content-length": _length(h.get("content-length"), ok, _is_content_path(path)),
            "content-type": None,
            "content-range": h.get("content-range"),
            "range": h.get("range"),
            "location": normalise_location(h.get("location")),
            "docker-upload-uuid": "present" if h.get("docker-upload-uuid") else None,
            "etag": "present" if h.get("etag") else None,
            "link": normalise_link(h.get("link")),
        }
        if ok and method in ("GET", "HEAD") and _is_content_path(path):
            values["content-type"] = h.get("content-type")
        elif reply.status >= 400 and method != "HEAD" and h.get("content-type"):
            values["content-type"] = h["content-type"].split(";")[0].strip()
        headers = tuple((k, values[k]) for k in COMPARED_HEADERS if k not in ignore)
        codes = error_codes(reply.content) if method != "HEAD" and "codes" not in ignore else None
        if codes is not None and same_codes:
            label = "|".join(sorted(same_codes))
            codes = tuple(label if c in same_codes else c for c in codes)
        value = body(reply) if body is not None and not reply.truncated else None
        return Observation(step, reply.status, headers, codes, value)

    # -- building blocks used by many sequences (recorded like any other step) --------------

    def push_blob(self, repo: str, data: bytes, step: str | None = None) -> str:
        """POST + PUT ?digest; returns the digest."""
        d = digest_of(data)
        label = step or f"push blob {d[:15]}"
        started = self.request(f"{label}: POST", "POST", f"/v2/{repo}/blobs/uploads/",
                               ignore={"range"})
        self.request(f"{label}: PUT ?digest", "PUT", started.location, params={"digest": d},
                     content=data)
        return d

    def push_manifest(self, repo: str, reference: str, payload: bytes, media_type: str,
                      step: str | None = None) -> str:
        label = step or f"PUT manifest {reference[:20]}"
        self.request(label, "PUT", f"/v2/{repo}/manifests/{reference}", content=payload,
                     headers={"Content-Type": media_type})
        return digest_of(payload)

    def image(self, repo: str, *, docker: bool = False, salt: str = "",
              step: str = "image") -> bytes:
        """Push a config and one layer; return a manifest (OCI or Docker schema 2) for them."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "salt": salt}).encode()
        layer = f"layer bytes {salt} {repo}".encode() * 7
        cd = self.push_blob(repo, config, f"{step}: config blob")
        ld = self.push_blob(repo, layer, f"{step}: layer blob")
        return image_manifest(cd, len(config), [(ld, len(layer))], docker=docker)


def image_manifest(config_digest: str, config_size: int, layers: list[tuple[str, int]], *,
                   docker: bool = False, **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER, "digest": d, "size": n}
                   for d, n in layers],
    }
    doc.update(extra)
    return json.dumps(doc, indent=3).encode()


def index_manifest(children: list[bytes], *, docker: bool = False) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST if docker else OCI_INDEX,
        "manifests": [
            {"mediaType": json.loads(c)["mediaType"], "digest": digest_of(c), "size": len(c),
             "platform": {"architecture": arch, "os": "linux"}}
            for c, arch in zip(children, ["amd64", "arm64", "s390x"], strict=False)
        ],
    }
    return json.dumps(doc, indent=2).encode()


Sequence = Callable[[Session], None]


def run_sequence(server: Server, sequence: Sequence, prefix: str) -> list[Observation]:
    """Run `sequence` against `server`; an aborted run ends with an `ABORTED` observation."""
    session = Session(server, prefix)
    try:
        sequence(session)
    except SequenceAborted as exc:
        session.observations.append(Observation(f"ABORTED: {exc}", 0, (), None))
    except httpx.HTTPError as exc:
        session.observations.append(Observation(f"ABORTED: {exc!r}", 0, (), None))
    finally:
        session.close()
    return session.observations


def differences(reference: list[Observation], actual: list[Observation],
                names: tuple[str, str] = ("distribution", "dockyard")) -> list[str]:
    """Every field that differs, step by step, as lines a failure message can show."""
    lines: list[str] = []
    for i in range(max(len(reference), len(actual))):
        ref = reference[i] if i < len(reference) else None
        act = actual[i] if i < len(actual) else None
        if ref is None or act is None or ref.step != act.step:
            lines.append(f"step {i + 1}: {names[0]}: "
                         f"{ref.step + ' -> ' + ref.short() if ref else '<none>'} | {names[1]}: "
                         f"{act.step + ' -> ' + act.short() if act else '<none>'}")
            continue
        a, b = ref.fields(), act.fields()
        diffs = [f"{k}: {names[0]}={a[k]!r} {names[1]}={b[k]!r}" for k in a if a[k] != b[k]]
        if diffs:
            lines.append(f"step {i + 1} '{ref.step}':\n      " + "\n      ".join(diffs))
    return lines


def new_prefix() -> str:
    return "diff" + secrets.token_hex(4)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]
