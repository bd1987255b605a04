"""What the UI calls a manifest (image, index, artifact) and how its filter matches."""

from __future__ import annotations

from dockyard.core.browse import Package, kind_of, matches, sbom_packages
from dockyard.oci import mediatypes as mt


def test_kind_of() -> None:
    image = {"config": {"mediaType": mt.OCI_CONFIG}}
    docker = {"config": {"mediaType": "application/vnd.docker.container.image.v1+json"}}
    helm = {"config": {"mediaType": "application/vnd.cncf.helm.config.v1+json"}}
    assert kind_of(mt.OCI_MANIFEST, None, image) == "image"
    assert kind_of(mt.DOCKER_MANIFEST, None, docker) == "image"
    assert kind_of(mt.OCI_MANIFEST, "application/spdx+json", image) == "artifact"
    assert kind_of(mt.OCI_MANIFEST, None, helm) == "artifact"
    assert kind_of(mt.OCI_INDEX, None, {}) == "index"
    assert kind_of(mt.DOCKER_LIST, None, {}) == "index"
    assert kind_of(mt.OCI_INDEX, "application/x-bundle", {}) == "artifact"


def test_matches_globs_whole_names_and_text_anywhere() -> None:
    assert matches("team/app", "")
    assert matches("team/app", "team/*")
    assert not matches("other/team/app", "team/*")
    assert matches("other/team/app", "team")
    assert matches("team/app", "*/a?p")
    assert not matches("team/app", "x")


def test_sbom_packages_of_spdx_and_cyclonedx() -> None:
    spdx = {"packages": [{"name": "zlib", "versionInfo": "1.3", "licenseConcluded": "Zlib"},
                         {"name": "x", "licenseConcluded": "NOASSERTION",
                          "licenseDeclared": "MIT"}]}
    assert sbom_packages(spdx) == [Package("zlib", "1.3", "Zlib"), Package("x", "", "MIT")]
    cdx = {"components": [{"name": "openssl", "version": "3.0",
                           "licenses": [{"license": {"id": "Apache-2.0"}}]},
                          {"name": "y", "licenses": [{"expression": "MIT OR GPL-2.0"}]},
                          "not a component"]}
    assert sbom_packages(cdx) == [Package("openssl", "3.0", "Apache-2.0"),
                                  Package("y", "", "MIT OR GPL-2.0")]
    assert sbom_packages({"packages": "nonsense"}) == []


def test_built_from_reads_the_oci_source_and_revision_annotations() -> None:
    from dockyard.core.browse import built_from

    def doc(**ann: object) -> dict[str, object]:
        return {"annotations": {f"org.opencontainers.image.{k}": v for k, v in ann.items()}}

    assert built_from(doc(source="https://g/x.git", revision="a" * 40)) == \
        "https://g/x.git@" + "a" * 12
    assert built_from(doc(source="https://g/x.git")) == "https://g/x.git"
    assert built_from(doc(revision="abc")) == "@abc"
    assert built_from(doc(title="x")) is None
    assert built_from({"annotations": "not a map"}) is None
    assert built_from(doc(source=7, revision=None)) is None
