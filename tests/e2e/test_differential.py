"""Differential tests: the same request sequences against CNCF Distribution 2.8 and Dockyard.

`test_same_answers[<sequence>-distribution]` runs a sequence against Debian's docker-registry
(Distribution 2.8.2) and checks that it runs to its end; `test_same_answers[<sequence>-dockyard]`
runs it against Dockyard and compares every step with Distribution's recording: the status,
the headers that matter and the OCI error codes (rules in `tests/support/differential.py`). A
failure lists each step that differs and each field, Distribution's value beside Dockyard's.

Sequences send what real clients send: manifests are fetched with an Accept header naming
the four manifest media types, Location URLs are followed as given.

Deliberate differences, tested separately (`test_deliberate_*`, each parametrized over both
servers and asserting what each one does):

+----------------------+---------------------------------------+-----------------------------------+
| behaviour            | Distribution 2.8.2 (recorded)         | Dockyard (asserted)               |
+======================+=======================================+===================================+
| referrers API: GET / | 404 text/plain "404 page not found"   | 200 OCI index of the referrers;   |
| v2/<name>/referrers/ | (no such route); a manifest with      | ?artifactType= filters and sets   |
| <digest>             | `subject` is stored but the PUT has   | OCI-Filters-Applied; the PUT      |
|                      | no OCI-Subject header                 | answers OCI-Subject               |
+----------------------+---------------------------------------+-----------------------------------+
| tag list paging:     | ignores n and last: every tag, in     | n tags after `last` in lexical    |
| tags/list?n=&last=   | directory order (not sorted), no Link | order, Link: <...?last=..&n=..>;  |
|                      |                                       | rel="next" while more remain      |
+----------------------+---------------------------------------+-----------------------------------+
| out-of-order chunk:  | Content-Range is never read: 202, the | 416 with Range: 0-<offset-1>,     |
| a PATCH whose        | bytes are appended where the upload   | nothing written; the session      |
| Content-Range does   | stands (Range 0-399 then 0-699 after  | stays usable (in-order chunk 202, |
| not start at the     | a 500-799 chunk, 0-799 after an       | PUT 201)                          |
| offset (gap,         | overlapping 0-99); the final PUT      |                                   |
| overlap, first chunk | fails 400 DIGEST_INVALID              |                                   |
| not at 0)            |                                       |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| Docker schema 1      | refused too in this configuration     | refused: 400 MANIFEST_INVALID     |
| manifest PUT         | (compatibility.schema1.enabled is     | ("Docker schema 1 manifests are   |
| (v1+prettyjws,       | false by default): 400                | not supported"); nothing stored   |
| v1+json)             | MANIFEST_INVALID                      |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| _catalog after a     | keeps listing the repository          | the repository disappears from    |
| repository's         |                                       | _catalog                          |
| manifests and blobs  |                                       |                                   |
| are all deleted      |                                       |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| monolithic single    | ignores digest and body: 202 and an   | 201, Docker-Content-Digest,       |
| POST: POST           | empty session; the blob does not      | Location of the blob (the spec's  |
| uploads/?digest=     | exist                                 | MAY)                              |
| with the blob as     |                                       |                                   |
| body                 |                                       |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| manifest GET without | OCI manifest or index by tag, no      | 200 with the stored bytes and     |
| a matching Accept    | Accept: 404 MANIFEST_UNKNOWN ("accept | media type                        |
|                      | header does not support OCI"); Docker |                                   |
|                      | schema 2 by tag, no Accept: 400       |                                   |
|                      | MANIFEST_INVALID (tries a schema 1    |                                   |
|                      | conversion); manifest list with       |                                   |
|                      | Accept: schema 2 only: 200 with the   |                                   |
|                      | amd64 child instead                   |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| 416 on a blob GET    | 416 and Content-Range: bytes          | 416 with a body as long as its    |
| (range past the end) | */<size>, but Content-Length: <size>  | Content-Length                    |
|                      | over a 33-byte text body: a framing   |                                   |
|                      | error, the client sees the connection |                                   |
|                      | cut                                   |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| invalid repository   | upper case is accepted: POST          | 400 NAME_INVALID for every one of |
| names (raw request   | /v2/Upper/x/blobs/uploads/ 202,       | them: the name is checked on the  |
| paths)               | tags/list 404 NAME_UNKNOWN; a/../b,   | raw path, before any              |
|                      | a/./b, a//b: 301 to the cleaned path; | normalisation                     |
|                      | -a, a-/b, a___b: 404 text/plain (no   |                                   |
|                      | route); 256 characters: 500 UNKNOWN   |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| invalid tags: -bad,  | 404 text/plain "404 page not found"   | 400 TAG_INVALID                   |
| .bad, 129            | (no route)                            |                                   |
| characters, bad!tag  |                                       |                                   |
+----------------------+---------------------------------------+-----------------------------------+
| DELETE manifest by   | 400 DIGEST_INVALID (tag deletion      | 202: the tag is gone, the         |
| tag                  | unsupported)                          | manifest stays (by digest); OCI   |
|                      |                                       | 1.1 lets a registry choose        |
+----------------------+---------------------------------------+-----------------------------------+


Other things Distribution 2.8 does, recorded here for the next reader. Where the spec lets a
registry choose, the sequences compare loosely (marked "loose") or avoid the request
(marked "avoided"):

- loose: `tags/list` lists tags in directory order, not sorted (compared sorted), and a
  repository whose tags are all gone answers `"tags": null` (compared as []).
- loose: a manifest or blob request in a repository that does not exist answers MANIFEST_UNKNOWN /
  BLOB_UNKNOWN, not NAME_UNKNOWN (either is accepted); `tags/list` there answers NAME_UNKNOWN.
- loose: after a PUT with the wrong digest the session is gone: a status GET answers 404
  BLOB_UPLOAD_INVALID (BLOB_UPLOAD_UNKNOWN accepted too).
- loose: POST answers `Range: 0-0` for a new session (the spec does not ask for Range there; not
  compared on POST).
- compared: HEAD with a Range answers 206 with Content-Range (compared).
- avoided: a Range it cannot parse (`garbage`, `bytes=5-1`, `items=0-5`) answers 416; two ranges
  answer 206 multipart/byteranges.
- avoided: PATCH with a Content-Type other than application/octet-stream answers 500 UNKNOWN; a
  manifest PUT of `{}` answers 500 UNKNOWN.
- avoided: `POST ?mount=` without `from`, with a malformed digest or from an upper-case repository:
  202, a new session.
- avoided: an upload URL without its `_state` query answers 404 BLOB_UPLOAD_INVALID.
- avoided: `_catalog?n=-1` and `n=abc` are ignored (the whole list).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.differential import (
    ACCEPT_ALL_MANIFESTS,
    Observation,
    Reply,
    Session,
    body_digest,
    chunks,
    differences,
    digest_of,
    error_codes,
    image_manifest,
    index_manifest,
    json_field,
    link_target,
    new_prefix,
    run_sequence,
)
from tests.support.mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
)
from tests.support.servers import Server, start_distribution

SERVERS = ("distribution", "dockyard")
PREFIX = new_prefix()
A = ACCEPT_ALL_MANIFESTS

UNKNOWN_REPO_MANIFEST = {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}
UNKNOWN_REPO_BLOB = {"BLOB_UNKNOWN", "NAME_UNKNOWN"}
ENDED_UPLOAD = {"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"}


@pytest.fixture
def fresh_distribution(tmp_path: Path) -> Iterator[Server]:
    """A Distribution of its own, for sequences that need an empty catalog."""
    server = start_distribution(tmp_path / "distribution" / "data")
    yield server
    server.stop()


# -- the compared sequences -------------------------------------------------------------------


SequenceFn = Callable[[Session], None]


@dataclass(frozen=True)
class Spec:
    """A registered sequence; `fresh` ones run against empty servers of their own."""

    run: SequenceFn
    fresh: bool = False


SEQUENCES: dict[str, Spec] = {}


def sequence(*, fresh: bool = False) -> Callable[[SequenceFn], SequenceFn]:
    """Register `seq_<name>` as the compared sequence `<name>`."""

    def register(fn: SequenceFn) -> SequenceFn:
        SEQUENCES[fn.__name__.removeprefix("seq_")] = Spec(fn, fresh)
        return fn

    return register


BLOB_1000 = bytes(range(250)) * 4
BLOB_800 = (b"0123456789abcdef" * 50)[:800]


@sequence()
def seq_base_endpoint(s: Session) -> None:
    s.request("GET /v2/", "GET", "/v2/")
    s.request("HEAD /v2/", "HEAD", "/v2/")


@sequence()
def seq_blob_post_put(s: Session) -> None:
    repo = s.repo("post-put")
    d = digest_of(BLOB_1000)
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    done = s.request("PUT ?digest with the whole blob", "PUT", started.location,
                     params={"digest": d}, content=BLOB_1000)
    s.request("HEAD blob", "HEAD", f"/v2/{repo}/blobs/{d}")
    s.request("GET blob", "GET", f"/v2/{repo}/blobs/{d}", body=body_digest)
    s.request("GET the Location of the PUT", "GET", done.location, body=body_digest)
    s.request("GET status of the finished session", "GET", started.location)


@sequence()
def seq_blob_ranges(s: Session) -> None:
    repo = s.repo("ranges")
    d = s.push_blob(repo, BLOB_1000)
    url = f"/v2/{repo}/blobs/{d}"
    for rng in ("bytes=0-99", "bytes=900-", "bytes=-10", "bytes=999-999", "bytes=0-5000"):
        s.request(f"GET Range {rng}", "GET", url, headers={"Range": rng}, body=body_digest)
    s.request("HEAD Range bytes=0-99", "HEAD", url, headers={"Range": "bytes=0-99"})
    # 416: Distribution frames the body wrongly (see the table), so only status, Content-Range
    # and the other headers are compared; not the body or its type.
    for rng in ("bytes=1000-", "bytes=2000-2100"):
        s.request(f"GET Range {rng} (unsatisfiable)", "GET", url, headers={"Range": rng},
                  ignore={"content-type", "codes"})


def _two_chunks(s: Session, name: str, first: str, second: str) -> None:
    repo = s.repo(name)
    d = digest_of(BLOB_800)
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    one = s.request(f"PATCH Content-Range: {first}", "PATCH", started.location,
                    content=BLOB_800[:400],
                    headers={"Content-Range": first, "Content-Type": "application/octet-stream"})
    status = s.request("GET upload status", "GET", one.location)
    two = s.request(f"PATCH Content-Range: {second}", "PATCH", status.location,
                    content=BLOB_800[400:],
                    headers={"Content-Range": second, "Content-Type": "application/octet-stream"})
    s.request("GET upload status after both chunks", "GET", two.location)
    s.request("PUT ?digest without a body", "PUT", two.location, params={"digest": d})
    s.request("HEAD blob", "HEAD", f"/v2/{repo}/blobs/{d}")
    s.request("GET blob", "GET", f"/v2/{repo}/blobs/{d}", body=body_digest)


@sequence()
def seq_blob_chunked_content_range_plain(s: Session) -> None:
    _two_chunks(s, "chunks-plain", "0-399", "400-799")


@sequence()
def seq_blob_chunked_content_range_bytes_prefix(s: Session) -> None:
    _two_chunks(s, "chunks-bytes", "bytes=0-399", "bytes=400-799")


@sequence()
def seq_blob_patch_transfer_encoding_chunked(s: Session) -> None:
    repo = s.repo("patch-te-chunked")
    d = digest_of(BLOB_800)
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    patched = s.request("PATCH, Transfer-Encoding: chunked, no Content-Range", "PATCH",
                        started.location, content=chunks(BLOB_800, 300))
    s.request("GET upload status", "GET", patched.location)
    s.request("PUT ?digest", "PUT", patched.location, params={"digest": d})
    s.request("GET blob", "GET", f"/v2/{repo}/blobs/{d}", body=body_digest)


@sequence()
def seq_blob_patch_then_put_with_last_chunk(s: Session) -> None:
    repo = s.repo("patch-put-last")
    d = digest_of(BLOB_800)
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    patched = s.request("PATCH first half (Content-Length only)", "PATCH", started.location,
                        content=BLOB_800[:400])
    s.request("PUT ?digest with the second half", "PUT", patched.location,
              params={"digest": d}, content=BLOB_800[400:])
    s.request("GET blob", "GET", f"/v2/{repo}/blobs/{d}", body=body_digest)


@sequence()
def seq_blob_upload_cancel(s: Session) -> None:
    repo = s.repo("cancel")
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    patched = s.request("PATCH 400 bytes", "PATCH", started.location, content=BLOB_800[:400])
    url = patched.location
    s.request("DELETE session", "DELETE", url)
    s.request("GET status after cancel", "GET", url)
    s.request("PATCH after cancel", "PATCH", url, content=b"more")
    s.request("PUT after cancel", "PUT", url, params={"digest": digest_of(BLOB_800[:400])})
    s.request("DELETE again", "DELETE", url)


@sequence()
def seq_blob_upload_wrong_digest(s: Session) -> None:
    repo = s.repo("wrong-digest")
    wrong = digest_of(b"something else")
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    s.request("PUT ?digest=<digest of other bytes>", "PUT", started.location,
              params={"digest": wrong}, content=BLOB_800)
    s.request("HEAD blob by the claimed digest", "HEAD", f"/v2/{repo}/blobs/{wrong}")
    s.request("HEAD blob by the real digest", "HEAD", f"/v2/{repo}/blobs/{digest_of(BLOB_800)}")
    s.request("GET status of the failed session", "GET", started.location,
              same_codes=ENDED_UPLOAD, ignore={"location", "range", "docker-upload-uuid"})


@sequence()
def seq_blob_bad_digest_strings(s: Session) -> None:
    repo = s.repo("bad-digest")
    d = s.push_blob(repo, BLOB_800)
    started = s.request("POST uploads/", "POST", f"/v2/{repo}/blobs/uploads/", ignore={"range"})
    s.request("PUT ?digest=sha256:xyz", "PUT", started.location,
              params={"digest": "sha256:xyz"}, content=BLOB_800)
    started = s.request("POST uploads/ (2)", "POST", f"/v2/{repo}/blobs/uploads/",
                        ignore={"range"})
    s.request("PUT without ?digest", "PUT", started.location, content=BLOB_800)
    for bad in ("sha256:abc", "sha256:" + "Z" * 64):
        s.request(f"HEAD blob {bad[:14]}", "HEAD", f"/v2/{repo}/blobs/{bad}")
        s.request(f"GET blob {bad[:14]}", "GET", f"/v2/{repo}/blobs/{bad}")
        s.request(f"DELETE blob {bad[:14]}", "DELETE", f"/v2/{repo}/blobs/{bad}")
    s.request("HEAD the good blob still there", "HEAD", f"/v2/{repo}/blobs/{d}")


@sequence()
def seq_blob_unknown(s: Session) -> None:
    repo = s.repo("blob-unknown")
    s.push_blob(repo, b"exists so the repository exists")
    missing = digest_of(b"never uploaded")
    s.request("HEAD unknown blob", "HEAD", f"/v2/{repo}/blobs/{missing}")
    s.request("GET unknown blob", "GET", f"/v2/{repo}/blobs/{missing}")
    other = s.repo("never-pushed")
    s.request("HEAD blob in unknown repository", "HEAD", f"/v2/{other}/blobs/{missing}")
    s.request("GET blob in unknown repository", "GET", f"/v2/{other}/blobs/{missing}",
              same_codes=UNKNOWN_REPO_BLOB)


@sequence()
def seq_blob_mount(s: Session) -> None:
    src, dst = s.repo("mount-src"), s.repo("mount-dst")
    d = s.push_blob(src, BLOB_1000)
    s.request("HEAD blob in target before mount", "HEAD", f"/v2/{dst}/blobs/{d}")
    s.request("POST ?mount=&from= (known blob)", "POST", f"/v2/{dst}/blobs/uploads/",
              params={"mount": d, "from": src})
    s.request("HEAD blob in target after mount", "HEAD", f"/v2/{dst}/blobs/{d}")
    s.request("GET blob in target after mount", "GET", f"/v2/{dst}/blobs/{d}", body=body_digest)
    unknown = digest_of(b"not in the source")
    session = s.request("POST ?mount=<unknown blob>&from= (falls back to a session)", "POST",
                        f"/v2/{s.repo('mount-dst2')}/blobs/uploads/",
                        params={"mount": unknown, "from": src}, ignore={"range"})
    s.request("GET status of the fallback session", "GET", session.location)
    s.request("POST ?mount=&from=<repository without it>", "POST",
              f"/v2/{s.repo('mount-dst3')}/blobs/uploads/",
              params={"mount": d, "from": s.repo("never-pushed")}, ignore={"range"})


@sequence()
def seq_blob_delete(s: Session) -> None:
    one, two = s.repo("blob-del-1"), s.repo("blob-del-2")
    d = s.push_blob(one, BLOB_1000)
    s.request("mount into a second repository", "POST", f"/v2/{two}/blobs/uploads/",
              params={"mount": d, "from": one})
    s.request("DELETE blob", "DELETE", f"/v2/{one}/blobs/{d}")
    s.request("HEAD deleted blob", "HEAD", f"/v2/{one}/blobs/{d}")
    s.request("GET deleted blob", "GET", f"/v2/{one}/blobs/{d}")
    s.request("HEAD blob in the other repository", "HEAD", f"/v2/{two}/blobs/{d}")
    s.request("DELETE blob again", "DELETE", f"/v2/{one}/blobs/{d}")
    s.request("DELETE blob never uploaded", "DELETE",
              f"/v2/{one}/blobs/{digest_of(b'never uploaded')}")
    s.request("DELETE blob in unknown repository", "DELETE",
              f"/v2/{s.repo('never-pushed')}/blobs/{d}", same_codes=UNKNOWN_REPO_BLOB)


def _manifest_round_trip(s: Session, repo: str, payload: bytes, media_type: str) -> None:
    d = digest_of(payload)
    s.request(f"PUT {media_type} by tag", "PUT", f"/v2/{repo}/manifests/v1",
              content=payload, headers={"Content-Type": media_type})
    s.request("HEAD by tag", "HEAD", f"/v2/{repo}/manifests/v1", headers=A)
    s.request("GET by tag", "GET", f"/v2/{repo}/manifests/v1", headers=A, body=body_digest)
    s.request("HEAD by digest", "HEAD", f"/v2/{repo}/manifests/{d}", headers=A)
    s.request("GET by digest", "GET", f"/v2/{repo}/manifests/{d}", headers=A, body=body_digest)
    s.request("PUT same bytes by digest", "PUT", f"/v2/{repo}/manifests/{d}", content=payload,
              headers={"Content-Type": media_type})
    s.request("PUT by a digest of other bytes", "PUT",
              f"/v2/{repo}/manifests/{digest_of(payload + b' ')}", content=payload,
              headers={"Content-Type": media_type})


@sequence()
def seq_manifest_oci_image(s: Session) -> None:
    repo = s.repo("oci-image")
    _manifest_round_trip(s, repo, s.image(repo), OCI_MANIFEST)


@sequence()
def seq_manifest_docker_schema2(s: Session) -> None:
    repo = s.repo("docker-image")
    _manifest_round_trip(s, repo, s.image(repo, docker=True), DOCKER_MANIFEST)


@sequence()
def seq_manifest_oci_index(s: Session) -> None:
    repo = s.repo("oci-index")
    children = [s.image(repo, salt="amd64", step="child 1"),
                s.image(repo, salt="arm64", step="child 2")]
    for n, child in enumerate(children, 1):
        s.push_manifest(repo, digest_of(child), child, OCI_MANIFEST, f"PUT child {n} by digest")
    _manifest_round_trip(s, repo, index_manifest(children), OCI_INDEX)


@sequence()
def seq_manifest_docker_list(s: Session) -> None:
    repo = s.repo("docker-list")
    children = [s.image(repo, docker=True, salt="amd64", step="child 1"),
                s.image(repo, docker=True, salt="arm64", step="child 2")]
    for n, child in enumerate(children, 1):
        s.push_manifest(repo, digest_of(child), child, DOCKER_MANIFEST,
                        f"PUT child {n} by digest")
    _manifest_round_trip(s, repo, index_manifest(children, docker=True), DOCKER_LIST)


@sequence()
def seq_manifest_blob_unknown(s: Session) -> None:
    repo = s.repo("manifest-blob-unknown")
    config = b'{"architecture":"amd64","os":"linux"}'
    cd = s.push_blob(repo, config)
    no_config = image_manifest(digest_of(b"no such config"), 14, [])
    s.request("PUT manifest whose config is missing", "PUT", f"/v2/{repo}/manifests/t",
              content=no_config, headers={"Content-Type": OCI_MANIFEST})
    no_layer = image_manifest(cd, len(config), [(digest_of(b"no such layer"), 13)])
    s.request("PUT manifest whose layer is missing", "PUT", f"/v2/{repo}/manifests/t",
              content=no_layer, headers={"Content-Type": OCI_MANIFEST})
    ghost = image_manifest(cd, len(config), [])
    index = index_manifest([ghost])
    s.request("PUT index whose child manifest is missing", "PUT", f"/v2/{repo}/manifests/t",
              content=index, headers={"Content-Type": OCI_INDEX})
    s.request("GET the tag: nothing was stored", "GET", f"/v2/{repo}/manifests/t", headers=A)


@sequence()
def seq_manifest_invalid(s: Session) -> None:
    repo = s.repo("manifest-invalid")
    s.push_blob(repo, b"so the repository exists")
    for label, payload in (("not JSON", b"{not json"), ("empty body", b""),
                           ("JSON array", b"[]")):
        s.request(f"PUT {label} as OCI manifest", "PUT", f"/v2/{repo}/manifests/t",
                  content=payload, headers={"Content-Type": OCI_MANIFEST})
    s.request("PUT not JSON as Docker schema 2", "PUT", f"/v2/{repo}/manifests/t",
              content=b"{not json", headers={"Content-Type": DOCKER_MANIFEST})
    s.request("GET the tag: nothing was stored", "GET", f"/v2/{repo}/manifests/t", headers=A)


@sequence()
def seq_manifest_unknown(s: Session) -> None:
    repo = s.repo("manifest-unknown")
    s.push_manifest(repo, "v1", s.image(repo), OCI_MANIFEST)
    missing = digest_of(b"no such manifest")
    s.request("GET unknown tag", "GET", f"/v2/{repo}/manifests/nosuch", headers=A)
    s.request("HEAD unknown tag", "HEAD", f"/v2/{repo}/manifests/nosuch", headers=A)
    s.request("GET unknown digest", "GET", f"/v2/{repo}/manifests/{missing}", headers=A)
    s.request("HEAD unknown digest", "HEAD", f"/v2/{repo}/manifests/{missing}", headers=A)
    other = s.repo("never-pushed")
    s.request("GET tag in unknown repository", "GET", f"/v2/{other}/manifests/v1", headers=A,
              same_codes=UNKNOWN_REPO_MANIFEST)
    s.request("HEAD tag in unknown repository", "HEAD", f"/v2/{other}/manifests/v1", headers=A)


@sequence()
def seq_manifest_tags_valid_edge(s: Session) -> None:
    repo = s.repo("tag-edge")
    payload = s.image(repo)
    for tag in ("Upper", "a" * 128, "_under.dot-dash", "0"):
        s.request(f"PUT tag {tag[:20]}", "PUT", f"/v2/{repo}/manifests/{tag}", content=payload,
                  headers={"Content-Type": OCI_MANIFEST})
        s.request(f"GET tag {tag[:20]}", "GET", f"/v2/{repo}/manifests/{tag}", headers=A,
                  body=body_digest)


@sequence()
def seq_manifest_tag_moves(s: Session) -> None:
    repo = s.repo("tag-moves")
    first = s.image(repo, salt="first", step="first image")
    second = s.image(repo, salt="second", step="second image")
    s.push_manifest(repo, "latest", first, OCI_MANIFEST, "PUT first as latest")
    s.request("GET latest", "GET", f"/v2/{repo}/manifests/latest", headers=A, body=body_digest)
    s.push_manifest(repo, "latest", second, OCI_MANIFEST, "PUT second as latest")
    s.request("GET latest again", "GET", f"/v2/{repo}/manifests/latest", headers=A,
              body=body_digest)
    s.request("GET first by digest (untagged, still there)", "GET",
              f"/v2/{repo}/manifests/{digest_of(first)}", headers=A, body=body_digest)


@sequence()
def seq_manifest_delete(s: Session) -> None:
    repo = s.repo("manifest-delete")
    payload = s.image(repo)
    d = digest_of(payload)
    s.push_manifest(repo, "t1", payload, OCI_MANIFEST, "PUT as t1")
    s.push_manifest(repo, "t2", payload, OCI_MANIFEST, "PUT as t2")
    s.request("tags/list (sorted)", "GET", f"/v2/{repo}/tags/list",
              body=json_field("tags", sort=True))
    s.request("DELETE by digest", "DELETE", f"/v2/{repo}/manifests/{d}")
    s.request("GET t1 after delete", "GET", f"/v2/{repo}/manifests/t1", headers=A)
    s.request("GET t2 after delete", "GET", f"/v2/{repo}/manifests/t2", headers=A)
    s.request("HEAD digest after delete", "HEAD", f"/v2/{repo}/manifests/{d}", headers=A)
    s.request("GET digest after delete", "GET", f"/v2/{repo}/manifests/{d}", headers=A)
    s.request("DELETE by digest again", "DELETE", f"/v2/{repo}/manifests/{d}")
    s.request("tags/list after delete", "GET", f"/v2/{repo}/tags/list", body=json_field("tags"))
    s.request("DELETE by malformed digest", "DELETE", f"/v2/{repo}/manifests/sha256:abc")
    s.request("DELETE in unknown repository", "DELETE",
              f"/v2/{s.repo('never-pushed')}/manifests/{d}", same_codes=UNKNOWN_REPO_MANIFEST)


@sequence()
def seq_tags_list(s: Session) -> None:
    repo = s.repo("tags")
    payload = s.image(repo)
    for tag in ("b", "a", "latest", "c", "A"):
        s.push_manifest(repo, tag, payload, OCI_MANIFEST, f"PUT tag {tag}")
    # Distribution 2.8 lists tags in directory order, not sorted: compare them sorted.
    s.request("tags/list (compared sorted)", "GET", f"/v2/{repo}/tags/list",
              body=lambda r: (r.json().get("name"), sorted(r.json().get("tags") or [])))
    s.request("tags/list of unknown repository", "GET",
              f"/v2/{s.repo('never-pushed')}/tags/list")


@sequence(fresh=True)
def seq_catalog_paging(s: Session) -> None:
    names = ["delta", "alpha", "charlie", "bravo", "echo"]
    for name in names:
        repo = s.repo(name)
        s.push_manifest(repo, "v1", s.image(repo, step=name), OCI_MANIFEST, f"PUT {name}:v1")
    whole = json_field("repositories")
    s.request("_catalog", "GET", "/v2/_catalog", body=whole)
    page = s.request("_catalog?n=2", "GET", "/v2/_catalog", params={"n": 2}, body=whole)
    page = s.request("follow Link (page 2)", "GET", link_target(page.headers.get("link")) or
                     "/v2/_catalog?missing-link", body=whole)
    s.request("follow Link (page 3)", "GET", link_target(page.headers.get("link")) or
              "/v2/_catalog?missing-link", body=whole)
    s.request("_catalog?n=2&last=<bravo>", "GET", "/v2/_catalog",
              params={"n": 2, "last": s.repo("bravo")}, body=whole)
    s.request("_catalog?n=2&last=<charlie> (exactly the rest)", "GET", "/v2/_catalog",
              params={"n": 2, "last": s.repo("charlie")}, body=whole)
    s.request("_catalog?n=10&last=<delta> (less than n left)", "GET", "/v2/_catalog",
              params={"n": 10, "last": s.repo("delta")}, body=whole)
    s.request("_catalog?last=zzz (past the end)", "GET", "/v2/_catalog",
              params={"last": "zzz"}, body=whole)


# -- running and comparing --------------------------------------------------------------------

Recordings = dict[tuple[str, str], list[Observation]]


@pytest.fixture(scope="module")
def recordings() -> Recordings:
    return {}


def record(request: pytest.FixtureRequest, recordings: Recordings, name: str,
           server_name: str) -> list[Observation]:
    key = (name, server_name)
    if key not in recordings:
        spec = SEQUENCES[name]
        server = request.getfixturevalue(f"fresh_{server_name}" if spec.fresh else server_name)
        recordings[key] = run_sequence(server, spec.run, f"{PREFIX}-{name.replace('_', '-')}")
    return recordings[key]


def describe(observations: list[Observation]) -> str:
    return "\n".join(f"  {i + 1:2} {o.step} -> {o.short()}" for i, o in enumerate(observations))


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_same_answers(request: pytest.FixtureRequest, recordings: Recordings, name: str,
                      server_name: str) -> None:
    reference = record(request, recordings, name, "distribution")
    if server_name == "distribution":
        # The reference must run the sequence to its end without a server error.
        broken = [o for o in reference if o.status == 0 or o.status >= 500]
        assert not broken, f"sequence {name} against Distribution:\n{describe(reference)}"
        return
    actual = record(request, recordings, name, "dockyard")
    diffs = differences(reference, actual)
    assert not diffs, (
        f"sequence {name}: Dockyard differs from Distribution 2.8 at {len(diffs)} step(s):\n  "
        + "\n  ".join(diffs)
        + f"\nDistribution:\n{describe(reference)}\nDockyard:\n{describe(actual)}")


# -- deliberate differences -------------------------------------------------------------------


@pytest.fixture(params=SERVERS)
def session(request: pytest.FixtureRequest) -> Iterator[tuple[str, Session]]:
    """A session against one server (a shared one), with a prefix of this test's own."""
    server_name: str = request.param
    server = request.getfixturevalue(server_name)
    s = Session(server, f"{PREFIX}-{request.node.originalname.removeprefix('test_')}"
                .replace("_", "-"))
    yield server_name, s
    s.close()


@pytest.fixture(params=SERVERS)
def fresh_session(request: pytest.FixtureRequest) -> Iterator[tuple[str, Session]]:
    """A session against an empty server of its own."""
    server_name: str = request.param
    server = request.getfixturevalue(f"fresh_{server_name}")
    s = Session(server, f"{PREFIX}-fresh")
    yield server_name, s
    s.close()


def codes(reply: Reply) -> tuple[str, ...] | None:
    return error_codes(reply.content)


def test_deliberate_referrers(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("app")
    subject = s.image(repo)
    sd = s.push_manifest(repo, "v1", subject, OCI_MANIFEST)
    empty = s.push_blob(repo, b"{}")
    artifact = image_manifest(empty, 2, [(empty, 2)], artifactType="application/vnd.example.sig",
                              subject={"mediaType": OCI_MANIFEST, "digest": sd,
                                       "size": len(subject)})
    artifact = artifact.replace(b'"application/vnd.oci.image.config.v1+json"',
                                json.dumps(OCI_EMPTY).encode())
    ad = digest_of(artifact)
    put = s.request("PUT artifact with subject", "PUT", f"/v2/{repo}/manifests/{ad}",
                    content=artifact, headers={"Content-Type": OCI_MANIFEST})
    assert put.status == 201
    listed = s.request("GET referrers", "GET", f"/v2/{repo}/referrers/{sd}")
    filtered = s.request("GET referrers ?artifactType=", "GET", f"/v2/{repo}/referrers/{sd}",
                         params={"artifactType": "application/vnd.example.sig"})
    other = s.request("GET referrers ?artifactType=<other>", "GET",
                      f"/v2/{repo}/referrers/{sd}", params={"artifactType": "application/x-none"})
    if server_name == "distribution":
        assert "oci-subject" not in put.headers
        for reply in (listed, filtered, other):
            assert reply.status == 404
            assert reply.content == b"404 page not found\n"
        return
    assert put.headers.get("oci-subject") == sd
    assert listed.status == 200
    assert listed.headers["content-type"].split(";")[0] == OCI_INDEX
    doc = listed.json()
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == OCI_INDEX
    assert [(m["digest"], m.get("artifactType")) for m in doc["manifests"]] == [
        (ad, "application/vnd.example.sig")]
    assert filtered.status == 200
    assert filtered.headers.get("oci-filters-applied") == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [ad]
    assert other.status == 200
    assert other.json()["manifests"] == []


def test_deliberate_tag_list_paging(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("paged")
    payload = s.image(repo)
    for tag in ("a", "b", "c", "d", "e"):
        s.push_manifest(repo, tag, payload, OCI_MANIFEST)
    first = s.request("tags/list?n=2", "GET", f"/v2/{repo}/tags/list", params={"n": 2})
    after = s.request("tags/list?n=2&last=b", "GET", f"/v2/{repo}/tags/list",
                      params={"n": 2, "last": "b"})
    assert first.status == 200
    if server_name == "distribution":
        # Every tag, in directory order (not sorted), whatever n and last say.
        assert sorted(first.json()["tags"]) == ["a", "b", "c", "d", "e"]
        assert "link" not in first.headers
        assert sorted(after.json()["tags"]) == ["a", "b", "c", "d", "e"]
        return
    assert first.json() == {"name": repo, "tags": ["a", "b"]}
    target = link_target(first.headers.get("link"))
    assert target is not None, "no Link header on a partial tag list"
    assert first.headers["link"].endswith('rel="next"')
    second = s.request("follow Link", "GET", target)
    assert second.json()["tags"] == ["c", "d"]
    assert after.json()["tags"] == ["c", "d"]
    last = s.request("tags/list?n=2&last=d", "GET", f"/v2/{repo}/tags/list",
                     params={"n": 2, "last": "d"})
    assert last.json()["tags"] == ["e"]
    assert "link" not in last.headers


def test_deliberate_out_of_order_chunks(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("ooo")
    d = digest_of(BLOB_800)
    started = s.request("POST", "POST", f"/v2/{repo}/blobs/uploads/")
    one = s.request("PATCH 0-399", "PATCH", started.location, content=BLOB_800[:400],
                    headers={"Content-Range": "0-399"})
    assert one.status == 202
    assert one.headers["range"] == "0-399"
    gap = s.request("PATCH 500-799 (gap)", "PATCH", one.location, content=BLOB_800[500:],
                    headers={"Content-Range": "500-799"})
    if server_name == "distribution":
        # Content-Range is not read at all: the bytes are appended where the upload stands.
        assert gap.status == 202
        assert gap.headers["range"] == "0-699"
        overlap = s.request("PATCH 0-99 (overlap)", "PATCH", gap.location,
                            content=BLOB_800[:100], headers={"Content-Range": "0-99"})
        assert overlap.status == 202
        assert overlap.headers["range"] == "0-799"
        final = s.request("PUT ?digest", "PUT", overlap.location, params={"digest": d})
        assert final.status == 400
        assert codes(final) == ("DIGEST_INVALID",)
        return
    assert gap.status == 416
    assert gap.headers.get("range") == "0-399"
    overlap = s.request("PATCH 0-99 (overlap)", "PATCH", one.location, content=BLOB_800[:100],
                        headers={"Content-Range": "0-99"})
    assert overlap.status == 416
    assert overlap.headers.get("range") == "0-399"
    status = s.request("GET status: nothing was written", "GET", one.location)
    assert status.status == 204
    assert status.headers["range"] == "0-399"
    two = s.request("PATCH 400-799 (in order)", "PATCH", status.location,
                    content=BLOB_800[400:], headers={"Content-Range": "400-799"})
    assert two.status == 202
    assert two.headers["range"] == "0-799"
    final = s.request("PUT ?digest", "PUT", two.location, params={"digest": d})
    assert final.status == 201
    fresh = s.request("POST (2)", "POST", f"/v2/{repo}/blobs/uploads/")
    not_at_zero = s.request("first PATCH at 100-499", "PATCH", fresh.location,
                            content=BLOB_800[100:500], headers={"Content-Range": "100-499"})
    assert not_at_zero.status == 416


def test_deliberate_schema1_refused(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("schema1")
    s.push_blob(repo, b"so the repository exists")
    payload = json.dumps({"schemaVersion": 1, "name": repo, "tag": "old", "architecture": "amd64",
                          "fsLayers": [{"blobSum": digest_of(b"x")}],
                          "history": [{"v1Compatibility": "{}"}]}).encode()
    for media_type in (DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1):
        put = s.request(f"PUT {media_type}", "PUT", f"/v2/{repo}/manifests/old", content=payload,
                        headers={"Content-Type": media_type})
        if server_name == "distribution":
            assert (put.status, codes(put)) == (400, ("MANIFEST_INVALID",))
        else:
            assert (put.status, codes(put)) == (400, ("MANIFEST_INVALID",)), put.content
    gone = s.request("GET old", "GET", f"/v2/{repo}/manifests/old", headers=A)
    assert gone.status == 404


def test_deliberate_catalog_forgets_deleted_repositories(
        fresh_session: tuple[str, Session]) -> None:
    server_name, s = fresh_session
    keep, drop = s.repo("keep"), s.repo("drop")
    s.push_manifest(keep, "v1", s.image(keep), OCI_MANIFEST)
    config = b'{"architecture":"amd64","os":"linux"}'
    cd = s.push_blob(drop, config)
    ld = s.push_blob(drop, b"layer of the dropped repository")
    payload = image_manifest(cd, len(config), [(ld, 31)])
    md = s.push_manifest(drop, "v1", payload, OCI_MANIFEST)
    before = s.request("_catalog", "GET", "/v2/_catalog").json()["repositories"]
    assert before == [drop, keep]
    assert s.request("DELETE manifest", "DELETE", f"/v2/{drop}/manifests/{md}").status == 202
    for d in (cd, ld):
        assert s.request("DELETE blob", "DELETE", f"/v2/{drop}/blobs/{d}").status == 202
    after = s.request("_catalog", "GET", "/v2/_catalog").json()["repositories"]
    if server_name == "distribution":
        assert after == [drop, keep]
    else:
        assert after == [keep]


def test_deliberate_monolithic_single_post(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("single-post")
    d = digest_of(BLOB_1000)
    post = s.request("POST ?digest with body", "POST", f"/v2/{repo}/blobs/uploads/",
                     params={"digest": d}, content=BLOB_1000,
                     headers={"Content-Type": "application/octet-stream"})
    head = s.request("HEAD blob", "HEAD", f"/v2/{repo}/blobs/{d}")
    if server_name == "distribution":
        assert post.status == 202
        assert "/blobs/uploads/" in post.headers["location"]
        assert head.status == 404
        return
    assert post.status == 201
    assert post.headers["docker-content-digest"] == d
    assert post.headers["location"].endswith(f"/v2/{repo}/blobs/{d}")
    assert head.status == 200
    assert head.headers["content-length"] == "1000"


def test_deliberate_manifest_served_whatever_the_accept(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("accept")
    oci = s.image(repo, salt="oci", step="oci")
    docker = s.image(repo, docker=True, salt="docker", step="docker")
    s.push_manifest(repo, "oci", oci, OCI_MANIFEST)
    s.push_manifest(repo, "docker", docker, DOCKER_MANIFEST)
    s.push_manifest(repo, digest_of(oci), oci, OCI_MANIFEST)
    s.push_manifest(repo, "index", index_manifest([oci]), OCI_INDEX)
    s.push_manifest(repo, digest_of(docker), docker, DOCKER_MANIFEST)
    s.push_manifest(repo, "list", index_manifest([docker], docker=True), DOCKER_LIST)
    no_accept = {tag: s.request(f"GET {tag} without Accept", "GET",
                                f"/v2/{repo}/manifests/{tag}")
                 for tag in ("oci", "docker", "index")}
    schema2_only = s.request("GET list with Accept: schema 2 only", "GET",
                             f"/v2/{repo}/manifests/list", headers={"Accept": DOCKER_MANIFEST})
    if server_name == "distribution":
        assert (no_accept["oci"].status, codes(no_accept["oci"])) == (404, ("MANIFEST_UNKNOWN",))
        assert (no_accept["docker"].status, codes(no_accept["docker"])) == (
            400, ("MANIFEST_INVALID",))
        assert (no_accept["index"].status, codes(no_accept["index"])) == (
            404, ("MANIFEST_UNKNOWN",))
        assert schema2_only.status == 200
        assert schema2_only.headers["docker-content-digest"] == digest_of(docker)
        return
    for tag, media_type in (("oci", OCI_MANIFEST), ("docker", DOCKER_MANIFEST),
                            ("index", OCI_INDEX)):
        assert no_accept[tag].status == 200, (tag, no_accept[tag].content)
        assert no_accept[tag].headers["content-type"] == media_type
    assert schema2_only.status == 200
    assert schema2_only.headers["content-type"] == DOCKER_LIST


def test_deliberate_416_framing(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("framing")
    d = s.push_blob(repo, BLOB_1000)
    reply = s.request("GET Range past the end", "GET", f"/v2/{repo}/blobs/{d}",
                      headers={"Range": "bytes=2000-2100"})
    assert reply.status == 416
    assert reply.headers.get("content-range") == "bytes */1000"
    if server_name == "distribution":
        assert reply.headers["content-length"] == "1000"
        assert reply.truncated
    else:
        assert not reply.truncated
        assert reply.headers.get("content-length", str(len(reply.content))) == str(
            len(reply.content))


#: (label, method, raw path, what Distribution 2.8 answers: status, codes, Location)
BAD_NAMES = [
    ("upper case, tags/list", "GET", "/v2/Upper/x/tags/list", (404, ("NAME_UNKNOWN",), None)),
    ("upper case, start upload", "POST", "/v2/Upper/x/blobs/uploads/", (202, None, "upload")),
    ("dot-dot component", "GET", "/v2/a/../b/tags/list", (301, None, "/v2/b/tags/list")),
    ("dot-dot, start upload", "POST", "/v2/a/../b/blobs/uploads/",
     (301, None, "/v2/b/blobs/uploads/")),
    ("dot component", "GET", "/v2/a/./b/tags/list", (301, None, "/v2/a/b/tags/list")),
    ("empty component", "GET", "/v2/a//b/tags/list", (301, None, "/v2/a/b/tags/list")),
    ("empty component, start upload", "POST", "/v2/a//b/blobs/uploads/",
     (301, None, "/v2/a/b/blobs/uploads/")),
    ("leading separator", "GET", "/v2/-a/tags/list", (404, None, None)),
    ("trailing separator", "GET", "/v2/a-/b/tags/list", (404, None, None)),
    ("three underscores", "GET", "/v2/a___b/tags/list", (404, None, None)),
    ("256 characters, manifest", "GET", "/v2/a/" + "x" * 254 + "/manifests/v1",
     (500, ("UNKNOWN",), None)),
    ("256 characters, tags/list", "GET", "/v2/a/" + "x" * 254 + "/tags/list",
     (500, ("UNKNOWN",), None)),
]


@pytest.mark.parametrize(("label", "method", "path", "reference"), BAD_NAMES,
                         ids=[b[0] for b in BAD_NAMES])
def test_deliberate_invalid_names(session: tuple[str, Session], label: str, method: str,
                                  path: str, reference: tuple[int, tuple[str, ...] | None,
                                                              str | None]) -> None:
    server_name, s = session
    reply = s.raw(label, method, path)
    if server_name == "distribution":
        status, expected_codes, location = reference
        assert reply.status == status
        assert codes(reply) == expected_codes
        if location == "upload":
            assert "/v2/Upper/x/blobs/uploads/" in reply.headers["location"]
        elif location is not None:
            assert reply.headers["location"] == location
        return
    assert (reply.status, codes(reply)) == (400, ("NAME_INVALID",)), reply.content


BAD_TAGS = ["-bad", ".bad", "a" * 129, "bad!tag"]


@pytest.mark.parametrize("tag", BAD_TAGS, ids=["leading-dash", "leading-dot", "129-chars",
                                               "bang"])
def test_deliberate_invalid_tags(session: tuple[str, Session], tag: str) -> None:
    server_name, s = session
    repo = s.repo("tags")
    payload = s.image(repo)
    put = s.request(f"PUT tag {tag[:20]}", "PUT", f"/v2/{repo}/manifests/{tag}", content=payload,
                    headers={"Content-Type": OCI_MANIFEST})
    if server_name == "distribution":
        assert put.status == 404
        assert put.content == b"404 page not found\n"
        return
    assert (put.status, codes(put)) == (400, ("TAG_INVALID",)), put.content


def test_deliberate_delete_by_tag(session: tuple[str, Session]) -> None:
    server_name, s = session
    repo = s.repo("untag")
    payload = s.image(repo)
    d = s.push_manifest(repo, "v1", payload, OCI_MANIFEST)
    reply = s.request("DELETE by tag", "DELETE", f"/v2/{repo}/manifests/v1")
    tag = s.request("GET tag", "GET", f"/v2/{repo}/manifests/v1", headers=A)
    by_digest = s.request("GET digest", "GET", f"/v2/{repo}/manifests/{d}", headers=A)
    if server_name == "distribution":
        assert (reply.status, codes(reply)) == (400, ("DIGEST_INVALID",))
        assert tag.status == 200
        return
    assert reply.status == 202, reply.content
    assert tag.status == 404
    assert by_digest.status == 200
