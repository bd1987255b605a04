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
from dockyard.oci.errors import ManifestInvalid
from dockyard.oci.manifest import parse_manifest
from tests.support.fuzz import CONTENT_TYPES, FRAMINGS, MANIFESTS, nested


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
@given(doc=MANIFESTS, depth=st.integers(0, 100_000), prefix=FRAMINGS,
       brackets=st.sampled_from(["[]", "{}"]))
def test_framing_nesting_and_encodings(doc: dict[str, Any], depth: int, prefix: bytes,
                                       brackets: str) -> None:
    text = nested(json.dumps({**doc, "x": None}), depth, brackets)
    _only_manifest_invalid(prefix + text.encode(), mt.OCI_MANIFEST)
    _only_manifest_invalid(text.encode("utf-16"), None)
