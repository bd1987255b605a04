"""The container configuration the builder hands its engine, written by the builder itself.

`containers.conf` (runtime runc, default ulimits: what buildah needs on these hosts),
`registries.conf` (the target registry insecure when TLS verification is off) and,
with a private storage directory, `storage.conf`; returned as the engine's environment.
"""

from __future__ import annotations

import os
from pathlib import Path


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def engine_environment(work: Path, *, insecure: list[str], storage: Path | None,
                       storage_driver: str = "vfs", runtime: str = "runc") -> dict[str, str]:
    """Write the files under `work` and return the environment that points at them."""
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
        for d in ("graphroot", "runroot"):
            (storage / d).mkdir(parents=True, exist_ok=True)
        conf = work / "storage.conf"
        conf.write_text("[storage]\n"
                        f"driver = {_toml(storage_driver)}\n"
                        f"graphroot = {_toml(str(storage / 'graphroot'))}\n"
                        f"runroot = {_toml(str(storage / 'runroot'))}\n")
        env["CONTAINERS_STORAGE_CONF"] = str(conf)
    return env
