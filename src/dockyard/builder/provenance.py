"""Where a catalogue comes from: its git remote, commit and commit time (when in git).

The commit time is the build's SOURCE_DATE_EPOCH, so a rebuild of the same commit
stamps the same times into the image.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Provenance:
    source: str | None
    revision: str | None
    epoch: int
    root: Path | None = None
    pinned: bool = False  # SOURCE_DATE_EPOCH was given: every image uses it

    @property
    def created(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def provenance(root: Path) -> Provenance:
    """The catalogue's remote, HEAD commit and its time; SOURCE_DATE_EPOCH wins if set."""
    revision = _git(root, "rev-parse", "HEAD")
    source = _git(root, "remote", "get-url", "origin") if revision else None
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if env_epoch.isdigit():
        epoch = int(env_epoch)
    else:
        stamp = _git(root, "log", "-1", "--format=%ct") if revision else None
        epoch = int(stamp) if stamp and stamp.isdigit() else int(time.time())
    return Provenance(source, revision, epoch, root if revision else None,
                      env_epoch.isdigit())


def for_image(origin: Provenance, inputs: list[str]) -> Provenance:
    """`origin` with the time of the last commit that touched `inputs` (the image's
    Dockerfile, the files it copies, catalogue.yaml and root templates): an unrelated
    commit does not change an image's timestamps, so its layers stay the same."""
    if origin.pinned or origin.root is None or not inputs:
        return origin
    stamp = _git(origin.root, "log", "-1", "--format=%ct", "--", *inputs)
    return replace(origin, epoch=int(stamp)) if stamp and stamp.isdigit() else origin
