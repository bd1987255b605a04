"""Package databases read into SBOMs: installed packages only, stable output."""

from __future__ import annotations

import json

from dockyard.builder.sbom import Package, apk_packages, dpkg_packages, spdx_document

STATUS = """Package: zlib1g
Status: install ok installed
Architecture: amd64
Version: 1:1.2.13.dfsg-1
Description: compression library
 multi-line description
 .

Package: gone
Status: deinstall ok config-files
Version: 1

Package: adduser
Status: install ok installed
Architecture: all
Version: 3.134
"""


def test_dpkg_installed_packages_only_sorted() -> None:
    assert dpkg_packages(STATUS) == [Package("adduser", "3.134", "all", "deb"),
                                     Package("zlib1g", "1:1.2.13.dfsg-1", "amd64", "deb")]


def test_apk_database() -> None:
    db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n"
    assert [(p.name, p.version) for p in apk_packages(db)] == [("busybox", "1.36.1-r5"),
                                                               ("musl", "1.2.4-r2")]


def test_spdx_document_is_stable_and_complete() -> None:
    pkgs = dpkg_packages(STATUS)
    one = spdx_document("reg/p-x:t", "sha256:" + "a" * 64, "2024-01-01T00:00:00Z", pkgs)
    assert one == spdx_document("reg/p-x:t", "sha256:" + "a" * 64, "2024-01-01T00:00:00Z",
                                pkgs)
    doc = json.loads(one)
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert [p["name"] for p in doc["packages"]] == ["adduser", "zlib1g"]
    assert doc["packages"][1]["externalRefs"][0]["referenceLocator"] == \
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64"
