"""The container configuration the builder hands its engine, written by the builder itself.

`containers.conf` (runtime runc, default ulimits: what buildah needs on these hosts),
`registries.conf` (the target registry insecure when TLS verification is off), with a
private storage directory `storage.conf` (its run root short enough for podman), and with
credentials given on the command line an auth file; returned as the engine's environment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from dockyard.remote.credentials import Credentials, auth_files


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


RUNROOT_LIMIT = 50
"""The longest `--runroot` podman accepts. The cleanup command conmon runs when a container
exits passes the storage's runroot that way: past the limit it fails, and every `podman
run` (each image's tests) then waits podman's 20 s conmon timeout before returning."""


def runroot_for(storage: Path) -> Path:
    """The run root of a private storage: its `runroot` folder when that path is short
    enough for podman, else a folder named by the storage's hash in the runtime directory
    (/run as root, $XDG_RUNTIME_DIR otherwise; both private to the user), where it can be
    made (else the storage's own, slow but working)."""
    # resolved for the length and the hash alike: one graph root, one run root, however
    # the storage is named (containers/storage tolerates no other)
    own = storage.resolve() / "runroot"
    if len(str(own)) <= RUNROOT_LIMIT:
        return own
    runtime = "/run" if os.geteuid() == 0 else os.environ.get("XDG_RUNTIME_DIR", "")
    name = hashlib.sha256(str(storage.resolve()).encode()).hexdigest()[:16]
    short = Path(runtime) / "dockyard-build" / name
    if not runtime or len(str(short)) > RUNROOT_LIMIT:
        return own
    try:
        short.mkdir(mode=0o700, parents=True, exist_ok=True)  # as podman makes its own
    except OSError:
        return own
    return short


def engine_environment(work: Path, *, insecure: list[str], storage: Path | None,
                       storage_driver: str = "vfs", runtime: str = "runc",
                       credentials: dict[str, Credentials] | None = None,
                       auth_file: Path | None = None) -> dict[str, str]:
    """Write the files under `work` and return the environment that points at them.

    The engine reads the credentials the builder's own registry calls use: `auth_file`
    (else its usual auth files), with `credentials` per host written over them."""
    work.mkdir(parents=True, exist_ok=True)
    containers = work / "containers.conf"
    containers.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        "[engine]\n"
        f"runtime = {_toml(runtime)}\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f"events_logfile_path = {_toml(str(work / 'events.log'))}\n")
    registries = work / "registries.conf"
    lines = ['unqualified-search-registries = ["docker.io"]', ""]
    for host in insecure:
        lines += ["[[registry]]", f"location = {_toml(host)}", "insecure = true", ""]
    registries.write_text("\n".join(lines))
    env = {**os.environ, "CONTAINERS_CONF": str(containers),
           "CONTAINERS_REGISTRIES_CONF": str(registries)}
    if storage is not None:
        runroot = runroot_for(storage)
        for d in (storage / "graphroot", runroot):
            d.mkdir(parents=True, exist_ok=True)
        conf = work / "storage.conf"
        conf.write_text("[storage]\n"
                        f"driver = {_toml(storage_driver)}\n"
                        f"graphroot = {_toml(str(storage / 'graphroot'))}\n"
                        f"runroot = {_toml(str(runroot))}\n")
        env["CONTAINERS_STORAGE_CONF"] = str(conf)
    if credentials:
        sources = [auth_file] if auth_file is not None else auth_files()
        env["REGISTRY_AUTH_FILE"] = str(write_auth_file(work / "auth.json", credentials,
                                                        sources))
    elif auth_file is not None:
        env["REGISTRY_AUTH_FILE"] = str(auth_file)
    return env


def write_auth_file(path: Path, credentials: dict[str, Credentials],
                    sources: list[Path]) -> Path:
    """An auth file (owner-only) with the entries of `sources` (the first file naming a
    registry wins) and `credentials` for their hosts: the engine then reaches the target
    registry with them and every other registry as before."""
    auths: dict[str, object] = {}
    for source in sources:
        try:
            doc = json.loads(source.read_text())
        except (OSError, ValueError):
            continue
        found = doc.get("auths") if isinstance(doc, dict) else None
        if isinstance(found, dict):
            for key, entry in found.items():
                auths.setdefault(str(key), entry)
    for host, creds in credentials.items():
        raw = f"{creds.username}:{creds.password}".encode()
        auths[host] = {"auth": base64.b64encode(raw).decode()}
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"auths": auths}, out)
    return path
