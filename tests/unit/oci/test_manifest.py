"""Manifest parsing: OCI and Docker types, artifacts, subjects, and every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest
from dockyard.oci.errors import ManifestInvalid
from dockyard.oci.manifest import parse_manifest

CONFIG = Digest.of(b"{}")
LAYER1 = Digest.of(b"layer one")
LAYER2 = Digest.of(b"layer two")
CHILD1 = Digest.of(b"child one")
CHILD2 = Digest.of(b"child two")
SUBJECT = Digest.of(b"subject")
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def desc(media_type: str, digest: Digest, size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(digest), "size": size, **extra}


def oci_manifest(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": desc(mt.OCI_CONFIG, CONFIG, 2),
        "layers": [desc(LAYER_TYPE, LAYER1, 100), desc(LAYER_TYPE, LAYER2, 200)],
    }
    doc.update(extra)
    return doc


def oci_index(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            desc(mt.OCI_MANIFEST, CHILD1, 500,
                 platform={"architecture": "amd64", "os": "linux"}),
            desc(mt.OCI_MANIFEST, CHILD2, 600,
                 platform={"architecture": "arm64", "os": "linux"}),
        ],
    }
    doc.update(extra)
    return doc


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# --- accepted ----------------------------------------------------------------

def test_oci_image_manifest() -> None:
    m = parse_manifest(raw(oci_manifest()), mt.OCI_MANIFEST)
    assert m.media_type == mt.OCI_MANIFEST
    assert not m.is_index
    assert m.config is not None
    assert m.config.digest == CONFIG
    assert m.config.size == 2
    assert [b.digest for b in m.blobs] == [CONFIG, LAYER1, LAYER2]
    assert [b.size for b in m.blobs] == [2, 100, 200]
    assert m.children == ()
    assert m.subject is None
    # no artifactType: the config media type stands in for it
    assert m.artifact_type == mt.OCI_CONFIG


def test_oci_index() -> None:
    m = parse_manifest(raw(oci_index()), mt.OCI_INDEX)
    assert m.media_type == mt.OCI_INDEX
    assert m.is_index
    assert m.blobs == ()
    assert m.config is None
    assert [c.digest for c in m.children] == [CHILD1, CHILD2]
    assert [c.media_type for c in m.children] == [mt.OCI_MANIFEST, mt.OCI_MANIFEST]
    assert m.artifact_type is None


def test_docker_schema2_manifest() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc("application/vnd.docker.container.image.v1+json", CONFIG, 2),
        "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER1, 100)],
    }
    m = parse_manifest(raw(doc), mt.DOCKER_MANIFEST)
    assert m.media_type == mt.DOCKER_MANIFEST
    assert not m.is_index
    assert [b.digest for b in m.blobs] == [CONFIG, LAYER1]


def test_docker_manifest_list() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_LIST,
        "manifests": [desc(mt.DOCKER_MANIFEST, CHILD1, 500,
                           platform={"architecture": "amd64", "os": "linux"})],
    }
    m = parse_manifest(raw(doc), mt.DOCKER_LIST)
    assert m.media_type == mt.DOCKER_LIST
    assert m.is_index
    assert [c.digest for c in m.children] == [CHILD1]
    assert m.blobs == ()


def test_empty_index_is_accepted() -> None:
    m = parse_manifest(raw(oci_index(manifests=[])), mt.OCI_INDEX)
    assert m.children == ()


def test_media_type_from_content_type_when_payload_has_none() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    assert parse_manifest(raw(doc), mt.OCI_MANIFEST).media_type == mt.OCI_MANIFEST
    doc = oci_index()
    del doc["mediaType"]
    assert parse_manifest(raw(doc), mt.OCI_INDEX).media_type == mt.OCI_INDEX


def test_media_type_from_payload_when_no_content_type() -> None:
    assert parse_manifest(raw(oci_index()), None).media_type == mt.OCI_INDEX


def test_media_type_guessed_from_shape() -> None:
    manifest, index = oci_manifest(), oci_index()
    del manifest["mediaType"], index["mediaType"]
    assert parse_manifest(raw(manifest), None).media_type == mt.OCI_MANIFEST
    assert parse_manifest(raw(index), None).media_type == mt.OCI_INDEX


def test_content_type_parameters_and_case_are_ignored() -> None:
    ctype = mt.OCI_MANIFEST.upper() + "; charset=utf-8"
    assert parse_manifest(raw(oci_manifest()), ctype).media_type == mt.OCI_MANIFEST


def test_artifact_manifest_with_artifact_type() -> None:
    doc = oci_manifest(
        artifactType="application/vnd.example.sbom.v1",
        config=desc(mt.OCI_EMPTY, Digest.of(b"{}"), 2),
        layers=[desc("application/spdx+json", LAYER1, 100)],
    )
    m = parse_manifest(raw(doc), mt.OCI_MANIFEST)
    assert m.artifact_type == "application/vnd.example.sbom.v1"
    assert m.config is not None
    assert m.config.media_type == mt.OCI_EMPTY


def test_artifact_type_falls_back_to_custom_config_media_type() -> None:
    doc = oci_manifest(config=desc("application/vnd.cncf.helm.config.v1+json", CONFIG, 2))
    m = parse_manifest(raw(doc), mt.OCI_MANIFEST)
    assert m.artifact_type == "application/vnd.cncf.helm.config.v1+json"


def test_artifact_manifest_with_empty_layers() -> None:
    m = parse_manifest(raw(oci_manifest(layers=[])), mt.OCI_MANIFEST)
    assert [b.digest for b in m.blobs] == [CONFIG]


def test_index_artifact_type() -> None:
    m = parse_manifest(raw(oci_index(artifactType="application/vnd.example+type")),
                       mt.OCI_INDEX)
    assert m.artifact_type == "application/vnd.example+type"


def test_subject_is_parsed() -> None:
    doc = oci_manifest(subject=desc(mt.OCI_MANIFEST, SUBJECT, 1234),
                       artifactType="application/vnd.example.signature")
    m = parse_manifest(raw(doc), mt.OCI_MANIFEST)
    assert m.subject is not None
    assert m.subject.digest == SUBJECT
    assert m.subject.size == 1234
    assert m.subject.media_type == mt.OCI_MANIFEST
    # the subject is not a blob the manifest holds
    assert SUBJECT not in {b.digest for b in m.blobs}


def test_index_subject() -> None:
    m = parse_manifest(raw(oci_index(subject=desc(mt.OCI_INDEX, SUBJECT, 9))), mt.OCI_INDEX)
    assert m.subject is not None
    assert m.subject.digest == SUBJECT


def test_annotations_kept() -> None:
    doc = oci_manifest(annotations={"org.opencontainers.image.created": "2024-01-01"})
    doc["layers"][0]["annotations"] = {"k": "v"}
    m = parse_manifest(raw(doc), mt.OCI_MANIFEST)
    assert m.annotations == {"org.opencontainers.image.created": "2024-01-01"}
    assert m.blobs[1].annotations == {"k": "v"}


def test_descriptor_artifact_type() -> None:
    doc = oci_index()
    doc["manifests"][0]["artifactType"] = "application/x.custom"
    m = parse_manifest(raw(doc), mt.OCI_INDEX)
    assert m.children[0].artifact_type == "application/x.custom"
    assert m.children[1].artifact_type is None


def test_sha512_descriptors() -> None:
    layer = Digest.of(b"layer", "sha512")
    m = parse_manifest(raw(oci_manifest(layers=[desc(LAYER_TYPE, layer)])), mt.OCI_MANIFEST)
    assert m.blobs[1].digest == layer


def test_zero_size_descriptor_allowed() -> None:
    m = parse_manifest(raw(oci_manifest(layers=[desc(LAYER_TYPE, Digest.of(b""), 0)])),
                       mt.OCI_MANIFEST)
    assert m.blobs[1].size == 0


# --- refused -----------------------------------------------------------------

def _refused(payload: bytes, content_type: str | None, match: str | None = None) -> None:
    with pytest.raises(ManifestInvalid, match=match) as info:
        parse_manifest(payload, content_type)
    assert info.value.code == "MANIFEST_INVALID"


def test_schema1_signed_refused() -> None:
    doc = {"schemaVersion": 1, "name": "library/x", "tag": "latest", "fsLayers": [],
           "history": [], "signatures": []}
    _refused(raw(doc), mt.DOCKER_SCHEMA1_SIGNED, "schema 1")


def test_schema1_by_content_type_refused() -> None:
    _refused(raw({"schemaVersion": 1, "fsLayers": []}), mt.DOCKER_SCHEMA1, "schema 1")


def test_schema1_without_content_type_refused() -> None:
    _refused(raw({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}), None,
             "schema 1")


def test_schema1_media_type_in_payload_refused() -> None:
    _refused(raw(oci_manifest(mediaType=mt.DOCKER_SCHEMA1)), None, "schema 1")


@pytest.mark.parametrize(
    ("declared", "content_type"),
    [
        (mt.OCI_MANIFEST, mt.OCI_INDEX),
        (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST),
        (mt.DOCKER_MANIFEST, mt.OCI_MANIFEST),
    ],
)
def test_media_type_content_type_mismatch_refused(declared: str, content_type: str) -> None:
    _refused(raw(oci_manifest(mediaType=declared)), content_type, "does not match")


def test_index_pushed_as_manifest_refused() -> None:
    _refused(raw(oci_index()), mt.OCI_MANIFEST, "does not match")


@pytest.mark.parametrize(
    "payload",
    [b"[]", b'"a string"', b"42", b"null", b"true", b"[{\"schemaVersion\": 2}]"],
)
def test_non_object_json_refused(payload: bytes) -> None:
    _refused(payload, mt.OCI_MANIFEST, "JSON object")


@pytest.mark.parametrize("payload", [b"", b"{", b"not json", b"\xff\xfe\x00garbage",
                                     b'{"a": 1,}'])
def test_invalid_json_refused(payload: bytes) -> None:
    _refused(payload, mt.OCI_MANIFEST, "not valid JSON")


def test_unknown_media_type_refused() -> None:
    _refused(raw(oci_manifest(mediaType="application/vnd.example.thing+json")), None,
             "unsupported manifest media type")


def test_unknown_content_type_refused() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    _refused(raw(doc), "text/plain", "unsupported manifest media type")


def test_unrecognisable_shape_refused() -> None:
    _refused(raw({"schemaVersion": 2}), None, "no mediaType")


def test_non_string_media_type_refused() -> None:
    _refused(raw(oci_manifest(mediaType=42)), None, "mediaType must be a string")


@pytest.mark.parametrize("version", [None, 3, "2", 0])
def test_schema_version_must_be_2(version: Any) -> None:
    doc = oci_manifest()
    if version is None:
        del doc["schemaVersion"]
    else:
        doc["schemaVersion"] = version
    _refused(raw(doc), mt.OCI_MANIFEST, "schemaVersion")


def test_image_manifest_without_config_refused() -> None:
    doc = oci_manifest()
    del doc["config"]
    _refused(raw(doc), mt.OCI_MANIFEST, "config")


@pytest.mark.parametrize("layers", [None, "x", {"a": 1}, 3])
def test_image_manifest_layers_must_be_a_list(layers: Any) -> None:
    doc = oci_manifest()
    if layers is None:
        del doc["layers"]
    else:
        doc["layers"] = layers
    _refused(raw(doc), mt.OCI_MANIFEST, "layers must be a list")


@pytest.mark.parametrize("manifests", [None, "x", {"a": 1}])
def test_index_manifests_must_be_a_list(manifests: Any) -> None:
    doc = oci_index()
    if manifests is None:
        del doc["manifests"]
    else:
        doc["manifests"] = manifests
    _refused(raw(doc), mt.OCI_INDEX, "manifests must be a list")


_GOOD = desc(LAYER_TYPE, LAYER1, 100)


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:abc",
        42,
        None,
        [],
        {k: v for k, v in _GOOD.items() if k != "mediaType"},
        {k: v for k, v in _GOOD.items() if k != "digest"},
        {k: v for k, v in _GOOD.items() if k != "size"},
        {**_GOOD, "mediaType": ""},
        {**_GOOD, "mediaType": 7},
        {**_GOOD, "digest": 7},
        {**_GOOD, "digest": "sha256:" + "0" * 63},
        {**_GOOD, "digest": "sha256:" + "A" * 64},
        {**_GOOD, "digest": "md5:" + "0" * 32},
        {**_GOOD, "size": -1},
        {**_GOOD, "size": "100"},
        {**_GOOD, "size": 1.5},
        {**_GOOD, "size": True},
        {**_GOOD, "annotations": {"k": 1}},
        {**_GOOD, "annotations": ["k"]},
        {**_GOOD, "artifactType": 5},
    ],
)
def test_malformed_layer_descriptor_refused(bad: Any) -> None:
    doc = oci_manifest()
    doc["layers"].append(bad)
    _refused(raw(doc), mt.OCI_MANIFEST)


@pytest.mark.parametrize("bad", [{"mediaType": mt.OCI_CONFIG, "size": 2}, "config", []])
def test_malformed_config_refused(bad: Any) -> None:
    _refused(raw(oci_manifest(config=bad)), mt.OCI_MANIFEST, "config")


@pytest.mark.parametrize("bad", [{**_GOOD, "size": -5}, {"digest": str(CHILD1)}, 7])
def test_malformed_child_refused(bad: Any) -> None:
    doc = oci_index()
    doc["manifests"].append(bad)
    _refused(raw(doc), mt.OCI_INDEX, r"manifests\[\]")


@pytest.mark.parametrize("bad", ["sha256:" + "0" * 64, {"mediaType": mt.OCI_MANIFEST}, 1])
def test_malformed_subject_refused(bad: Any) -> None:
    _refused(raw(oci_manifest(subject=bad)), mt.OCI_MANIFEST, "subject")


def test_non_string_artifact_type_refused() -> None:
    _refused(raw(oci_manifest(artifactType=["a"])), mt.OCI_MANIFEST, "artifactType")


@pytest.mark.parametrize("annotations", [["a"], {"a": 1}, "a=b", {"a": None}])
def test_bad_annotations_refused(annotations: Any) -> None:
    _refused(raw(oci_manifest(annotations=annotations)), mt.OCI_MANIFEST, "annotations")


# --- what other clients cannot read (hardening) ------------------------------------


@pytest.mark.parametrize("depth", [2000, 100_000])
@pytest.mark.parametrize(("opening", "closing"), [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_refused_not_crashing(depth: int, opening: bytes, closing: bytes) -> None:
    _refused(opening * depth + b"1" + closing * depth, mt.OCI_MANIFEST, "nested too deeply")


def test_deep_nesting_inside_a_manifest_refused() -> None:
    payload = raw(oci_manifest()).replace(b'"layers"', b'"x":' + b"[" * 5000 + b"]" * 5000
                                          + b',"layers"')
    _refused(payload, mt.OCI_MANIFEST, "nested too deeply")


@pytest.mark.parametrize("size", [2**63, 2**64, 10**30])
def test_size_beyond_int64_refused(size: int) -> None:
    doc = oci_manifest()
    doc["layers"][0]["size"] = size
    _refused(raw(doc), mt.OCI_MANIFEST, r"layers\[\]\.size")


def test_size_at_int64_max_accepted() -> None:
    doc = oci_manifest()
    doc["layers"][0]["size"] = 2**63 - 1
    assert parse_manifest(raw(doc), mt.OCI_MANIFEST).blobs[1].size == 2**63 - 1


def test_byte_order_mark_refused() -> None:
    _refused(b"\xef\xbb\xbf" + raw(oci_manifest()), mt.OCI_MANIFEST, "byte order mark")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
def test_utf16_and_utf32_refused(encoding: str) -> None:
    # json.loads alone would guess the encoding and accept them
    _refused(raw(oci_manifest()).decode().encode(encoding), mt.OCI_MANIFEST, "not valid JSON")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_refused(constant: bytes) -> None:
    payload = raw(oci_manifest()).replace(b'"layers"', b'"x":' + constant + b',"layers"')
    _refused(payload, mt.OCI_MANIFEST, "not valid JSON")


def test_a_key_given_twice_is_refused() -> None:
    # which of the two counts is each parser's choice: the registry's `layers` (what
    # the collector keeps) could differ from what a client pulls
    doc = oci_manifest()
    other = json.dumps([{**doc["layers"][0], "digest": "sha256:" + "c" * 64}])
    payload = raw(doc).replace(b'"layers"', b'"layers":' + other.encode() + b',"layers"')
    _refused(payload, mt.OCI_MANIFEST, "key 'layers' appears twice")
    nested = raw(doc).replace(b'"digest"', b'"digest":"sha256:' + b"d" * 64 + b'","digest"', 1)
    _refused(nested, mt.OCI_MANIFEST, "key 'digest' appears twice")
    index = raw(oci_index()).replace(b'"manifests"', b'"manifests":[],"manifests"')
    _refused(index, mt.OCI_INDEX, "key 'manifests' appears twice")


@pytest.mark.parametrize("variant", ["Layers", "LAYERS", "layerS"])
def test_a_field_beside_its_other_case_is_refused(variant: str) -> None:
    # Go's encoding/json (docker, containerd, skopeo) would fill `layers` from either
    payload = raw(oci_manifest()).replace(b'"layers"', f'"{variant}":[],"layers"'.encode())
    _refused(payload, mt.OCI_MANIFEST, f"keys 'layers' and '{variant}' differ only in case|"
                                       f"keys '{variant}' and 'layers' differ only in case")


def test_go_folds_the_long_s_and_so_do_we() -> None:
    # U+017F (long s) folds to "s" in Go's EqualFold: that spelling of "size" would fill
    # a descriptor's size
    doc = oci_manifest()
    payload = raw(doc).replace(b'"size"', '"\u017fize":1,"size"'.encode(), 1)
    _refused(payload, mt.OCI_MANIFEST, "differ only in case")


def test_keys_that_differ_in_case_elsewhere_are_kept() -> None:
    # annotations are a map in every client, where case is part of the key
    doc = oci_manifest(annotations={"Org.Example": "a", "org.example": "b",
                                    "Size": "1", "Digest": "x"})
    assert parse_manifest(raw(doc), mt.OCI_MANIFEST).annotations == doc["annotations"]


def test_schema_version_must_be_an_integer() -> None:
    _refused(raw(oci_manifest(schemaVersion=2.0)), mt.OCI_MANIFEST, "schemaVersion")


@pytest.mark.parametrize("media_type", ["\ud800", "a\x00b", "application/" + "x" * 250,
                                        "application/vnd.ünïcode"])
def test_unstorable_media_types_refused(media_type: str) -> None:
    doc = oci_manifest()
    doc["config"]["mediaType"] = media_type
    _refused(json.dumps(doc).encode(), mt.OCI_MANIFEST, r"config\.mediaType")
    _refused(raw(oci_manifest(artifactType=media_type)), mt.OCI_MANIFEST, "artifactType")


def test_empty_artifact_type_still_means_none() -> None:
    m = parse_manifest(raw(oci_manifest(artifactType="")), mt.OCI_MANIFEST)
    assert m.artifact_type == mt.OCI_CONFIG
