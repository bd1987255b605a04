"""Hypothesis strategies for client input: manifest-shaped JSON, odd text and numbers."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest

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
#: what an HTTP header value can carry (printable ASCII, no outer spaces), numbers among it
HEADER_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60),
    st.from_regex(r"(bytes[ =])?-?[0-9]{0,30}-[0-9]{0,30}(/[0-9*]{0,25})?", fullmatch=True),
).map(str.strip)
#: query values: any text, digits of any length, digests
QUERY_TEXT = st.one_of(st.text(max_size=60), st.from_regex(r"-?[0-9]{1,40}", fullmatch=True),
                       DIGESTS)


def descriptors() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"mediaType": st.one_of(st.sampled_from(sorted(mt.MANIFESTS)), VALUES),
         "digest": DIGESTS, "size": st.one_of(st.integers(-2, 2**64), VALUES)},
        optional={"artifactType": VALUES, "annotations": VALUES})


#: shaped like manifests, so the fuzzing reaches past the first checks
MANIFESTS = st.fixed_dictionaries(
    {"schemaVersion": st.one_of(st.just(2), VALUES)},
    optional={"mediaType": st.one_of(st.sampled_from(sorted(mt.MANIFESTS)), VALUES),
              "config": st.one_of(descriptors(), VALUES),
              "layers": st.one_of(st.lists(descriptors(), max_size=3), VALUES),
              "manifests": st.one_of(st.lists(descriptors(), max_size=3), VALUES),
              "subject": st.one_of(descriptors(), VALUES),
              "artifactType": VALUES, "annotations": VALUES},
).flatmap(lambda doc: st.dictionaries(KEYS, VALUES, max_size=2).map(
    lambda extra: {**extra, **doc}))

#: prefixes that make a payload something other than plain UTF-8 JSON
FRAMINGS = st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b" \n"])


def nested(text: str, depth: int, brackets: str) -> str:
    """`text` (a JSON object ending in `"x": null}`) with `null` nested `depth` deep."""
    opening, closing = ('{"a":', "}") if brackets == "{}" else ("[", "]")
    return text.replace("null}", opening * depth + "null" + closing * depth + "}", 1)
