"""SBOMs: the packages of an image's Debian (dpkg) or Alpine (apk) database as SPDX 2.3 JSON.

The document is a function of the image's packages, name, key and build time only, so a
rebuild of unchanged inputs yields the same SBOM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

DPKG_STATUS = "/var/lib/dpkg/status"
APK_INSTALLED = "/lib/apk/db/installed"
SPDX_MEDIA_TYPE = "application/spdx+json"


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    version: str
    architecture: str
    kind: str  # "deb" or "apk"


def _stanzas(text: str) -> list[dict[str, str]]:
    """RFC 822-style paragraphs (dpkg status); continuation lines are dropped."""
    out: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if fields:
            out.append(fields)
    return out


def dpkg_packages(status: str) -> list[Package]:
    """Installed packages of a dpkg status file (`Status: install ok installed`)."""
    return sorted(
        (Package(f["Package"], f.get("Version", ""), f.get("Architecture", ""), "deb")
         for f in _stanzas(status)
         if "Package" in f and f.get("Status", "").endswith(" installed")),
        key=lambda p: p.name)


def apk_packages(installed: str) -> list[Package]:
    """Packages of an apk database (`P:` name, `V:` version, `A:` architecture)."""
    out: list[Package] = []
    for block in re.split(r"\n\s*\n", installed):
        fields = dict(line.split(":", 1) for line in block.splitlines() if line[1:2] == ":")
        if "P" in fields:
            out.append(Package(fields["P"], fields.get("V", ""), fields.get("A", ""), "apk"))
    return sorted(out, key=lambda p: p.name)


def _spdx_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def spdx_document(image: str, key: str, created: str, packages: list[Package]) -> bytes:
    """The SPDX 2.3 JSON document listing `packages` of `image`."""
    distro = {"deb": "debian", "apk": "alpine"}
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image,
        "documentNamespace": f"https://dockyard.invalid/spdx/{_spdx_id(image)}/{key[7:]}",
        "creationInfo": {"created": created, "creators": ["Tool: dockyard-build"]},
        "packages": [
            {
                "name": p.name,
                "SPDXID": f"SPDXRef-Package-{p.kind}-{_spdx_id(p.name)}-{i}",
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": f"pkg:{p.kind}/{distro[p.kind]}/{p.name}@{p.version}"
                                        + (f"?arch={p.architecture}" if p.architecture
                                           else ""),
                }],
            }
            for i, p in enumerate(packages)
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
