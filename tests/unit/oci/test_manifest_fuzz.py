"""Fuzzing the manifest parser: whatever the bytes, the only error is `ManifestInvalid`.

A client controls every byte of a manifest PUT; any other exception would be a 500.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import ManifestInvalid
from dockyard.oci.manifest import parse_manifest

CONTENT_TYPES = st.one_of(st.none(), st.sampled_from(sorted(mt.MANIFESTS | mt.SCHEMA1)),
                          st.text(max_size=40))
DIGESTS = st.one_of(st.just(str(Digest.of(b"x"))), st.just(str(Digest.of(b"x", "sha512"))),
                    st.text(max_size=80))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(2**62, 2**70),
                    st.floats(allow_nan=False), st.text(max_size=30), DIGESTS,
                    st.sampled_from(sorted(mt.MANIFESTS)))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
KEYS = st.sampled_from(["mediaType", "digest", "size", "artifactType", "annotations",
                        "schemaVersion", "config", "layers", "manifests", "subject", "urls"])


def _descriptors() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"mediaType": st.one_of(st.sampled_from(sorted(mt.MANIFESTS)), VALUES),
         "digest": DIGESTS, "size": st.one_of(st.integers(-2, 2**64), VALUES)},
        optional={"artifactType": VALUES, "annotations": VALUES})


#: shaped like manifests, so the fuzzing reaches past the first checks
MANIFESTS = st.fixed_dictionaries(
    {"schemaVersion": st.one_of(st.just(2), VALUES)},
    optional={"mediaType": st.one_of(st.sampled_from(sorted(mt.MANIFESTS)), VALUES),
              "config": st.one_of(_descriptors(), VALUES),
              "layers": st.one_of(st.lists(_descriptors(), max_size=3), VALUES),
              "manifests": st.one_of(st.lists(_descriptors(), max_size=3), VALUES),
              "subject": st.one_of(_descriptors(), VALUES),
              "artifactType": VALUES, "annotations": VALUES},
).flatmap(lambda doc: st.dictionaries(KEYS, VALUES, max_size=2).map(
    lambda extra: {**extra, **doc}))


def _only_manifest_invalid(payload: bytes, content_type: str | None) -> None:
    with contextlib.suppress(ManifestInvalid):  # anything else fails the test
        parse_manifest(payload, content_type)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), content_type=CONTENT_TYPES)
def test_arbitrary_bytes(payload: bytes, content_type: str | None) -> None:
    _only_manifest_invalid(payload, content_type)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=MANIFESTS, content_type=CONTENT_TYPES)
def test_manifest_shaped_json(doc: dict[str, Any], content_type: str | None) -> None:
    _only_manifest_invalid(json.dumps(doc).encode(), content_type)


@settings(max_examples=100, deadline=None)
@given(doc=MANIFESTS, depth=st.integers(0, 100_000), prefix=st.sampled_from(
    [b"", b"\xef\xbb\xbf", b"\xff\xfe", b" \n"]), brackets=st.sampled_from(["[]", "{}"]))
def test_framing_nesting_and_encodings(doc: dict[str, Any], depth: int, prefix: bytes,
                                       brackets: str) -> None:
    opening, closing = ('{"a":', "}") if brackets == "{}" else ("[", "]")
    text = json.dumps({**doc, "x": None}).replace(
        "null}", opening * depth + "null" + closing * depth + "}", 1)
    _only_manifest_invalid(prefix + text.encode(), mt.OCI_MANIFEST)
    _only_manifest_invalid(text.encode("utf-16"), None)
