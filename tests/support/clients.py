"""Run real registry clients (skopeo, podman, docker CLI) in private sandboxes for e2e tests.

Setup these helpers need beyond the Python dev extras (python-dxf, oras, httpx):

    apt-get install -y skopeo podman umoci busybox-static docker-registry runc
        (podman pulls in conmon, containernetworking-plugins, catatonit; runc is needed
         because crun fails on this cgroup setup)
    docker CLI >= 20 at /usr/local/bin/docker or on PATH (no daemon needed; only
        `docker manifest inspect` is used). Not a Debian package: the static binary from
        https://download.docker.com/linux/static/stable/x86_64/ (docker/docker) will do.

Nothing here touches the machine's global container state:

- skopeo and podman as root keep a blob-info cache in /var/lib/containers/cache, and with
  it skopeo skips uploads (HEAD + mount instead). Both honour `_CONTAINERS_ROOTLESS_UID`
  for where that cache lives, so with it set (and HOME/XDG_* pointing into the sandbox) the
  cache is `$XDG_DATA_HOME/containers/cache`, private to one sandbox: real uploads happen,
  and a second copy in the same sandbox can use cross-repository mounts.
- podman gets its own containers.conf (runc, cgroupfs, ulimits it may set without
  CAP_SYS_RESOURCE, tmp/event/network dirs in the sandbox), registries.conf (the test
  registries marked insecure) and storage.conf (vfs driver, private graphroot/runroot).
  `podman run` is not used: runc would still write /run/runc.
- the docker CLI gets a private DOCKER_CONFIG.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 180.0
LOG_TAIL_LINES = 80


def find_docker_cli() -> str | None:
    for candidate in (shutil.which("docker"), "/usr/local/bin/docker"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class Result:
    """What a client command did: exit code, output as text, and stdout's exact bytes."""

    argv: list[str]
    returncode: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")


class ClientError(AssertionError):
    """A client command failed; the message carries its command line and output tail."""

    def __init__(self, result: Result) -> None:
        self.argv = result.argv
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        tail = "\n".join(result.stderr.splitlines()[-LOG_TAIL_LINES:])
        super().__init__(
            f"command failed with exit code {result.returncode}: {' '.join(result.argv)}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n"
            f"--- stderr (last {LOG_TAIL_LINES} lines) ---\n{tail}"
        )


def _run(argv: Sequence[str], env: dict[str, str], *, check: bool = True,
         timeout: float = DEFAULT_TIMEOUT, cwd: Path | None = None) -> Result:
    proc = subprocess.run(list(argv), env=env, capture_output=True, timeout=timeout, cwd=cwd)
    result = Result(list(argv), proc.returncode, proc.stdout,
                    proc.stderr.decode("utf-8", errors="replace"))
    if check and result.returncode != 0:
        raise ClientError(result)
    return result


def _sandbox_env(root: Path) -> dict[str, str]:
    """An environment whose home, XDG dirs and tmp all live under `root`."""
    dirs = {
        "HOME": root / "home",
        "XDG_CONFIG_HOME": root / "home" / ".config",
        "XDG_DATA_HOME": root / "home" / ".local" / "share",
        "XDG_CACHE_HOME": root / "home" / ".cache",
        "XDG_RUNTIME_DIR": root / "xdg-run",
        "TMPDIR": root / "tmp",
    }
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONTAINERS_", "REGISTRY_AUTH_FILE", "DOCKER_", "XDG_"))}
    env.update({k: str(v) for k, v in dirs.items()})
    env["_CONTAINERS_ROOTLESS_UID"] = "1000"  # moves the blob-info cache into XDG_DATA_HOME
    return env


def _write_registries_conf(path: Path, insecure_hosts: Iterable[str]) -> None:
    lines = ["unqualified-search-registries = []", ""]
    for host in insecure_hosts:
        lines += ["[[registry]]", f'location = "{host}"', "insecure = true", ""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- skopeo


@dataclass
class Skopeo:
    """skopeo with a private policy, registries.d, blob-info cache and tmpdir.

    skopeo ignores registries.conf `insecure`, so every docker:// access passes the tls flags.
    Commands run with --debug so a failure's message shows the HTTP requests it made.
    """

    root: Path
    insecure_hosts: Sequence[str] = ()
    exe: str = field(default_factory=lambda: shutil.which("skopeo") or "skopeo")

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = _sandbox_env(self.root)
        self.policy = self.root / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries_d = self.root / "registries.d"
        self.registries_d.mkdir(exist_ok=True)
        self.registries_conf = self.root / "registries.conf"
        _write_registries_conf(self.registries_conf, self.insecure_hosts)
        self.env["CONTAINERS_REGISTRIES_CONF"] = str(self.registries_conf)
        self.tmpdir = Path(self.env["TMPDIR"])

    @property
    def cache_file(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "containers" / "cache" / \
            "blob-info-cache-v1.boltdb"

    def run(self, *args: str, check: bool = True, timeout: float = DEFAULT_TIMEOUT,
            ) -> Result:
        argv = [self.exe, "--debug", "--policy", str(self.policy),
                "--registries.d", str(self.registries_d), "--tmpdir", str(self.tmpdir), *args]
        return _run(argv, self.env, check=check, timeout=timeout)

    def copy(self, src: str, dest: str, *extra: str, check: bool = True,
             ) -> Result:
        return self.run("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                        *extra, src, dest, check=check)

    def inspect_raw(self, ref: str) -> bytes:
        return self.run("inspect", "--tls-verify=false", "--raw", ref).stdout_bytes

    def inspect(self, ref: str, *extra: str) -> dict[str, Any]:
        out = self.run("inspect", "--tls-verify=false", *extra, ref).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def inspect_config(self, ref: str) -> bytes:
        return self.run("inspect", "--tls-verify=false", "--config", "--raw", ref).stdout_bytes

    def list_tags(self, ref: str) -> list[str]:
        out = self.run("list-tags", "--tls-verify=false", ref).stdout
        return list(json.loads(out)["Tags"] or [])

    def delete(self, ref: str) -> Result:
        return self.run("delete", "--tls-verify=false", ref)

    def sync(self, src: str, dest: str, *extra: str) -> Result:
        return self.run("sync", "--src-tls-verify=false", "--dest-tls-verify=false",
                        *extra, src, dest)


# ---------------------------------------------------------------- podman


@dataclass
class Podman:
    """podman with its own containers.conf, registries.conf and vfs storage under `root`."""

    root: Path
    insecure_hosts: Sequence[str] = ()
    exe: str = field(default_factory=lambda: shutil.which("podman") or "podman")

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = _sandbox_env(self.root)
        r = self.root
        for d in ("graphroot", "runroot", "libpod-tmp", "networks", "volumes"):
            (r / d).mkdir(exist_ok=True)
        self.containers_conf = r / "containers.conf"
        self.containers_conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            f'tmp_dir = "{r / "libpod-tmp"}"\n'
            f'volume_path = "{r / "volumes"}"\n'
            f'image_copy_tmp_dir = "{self.env["TMPDIR"]}"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{r / "events.log"}"\n'
            "[network]\n"
            f'network_config_dir = "{r / "networks"}"\n'
        )
        self.registries_conf = r / "registries.conf"
        _write_registries_conf(self.registries_conf, self.insecure_hosts)
        self.storage_conf = r / "storage.conf"
        self.storage_conf.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{r / "graphroot"}"\n'
            f'runroot = "{r / "runroot"}"\n'
        )
        (r / "auth.json").write_text('{"auths": {}}')
        self.env.update({
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "REGISTRY_AUTH_FILE": str(r / "auth.json"),
        })

    def run(self, *args: str, check: bool = True, timeout: float = DEFAULT_TIMEOUT,
            debug: bool = True) -> Result:
        argv = [self.exe, *(["--log-level=debug"] if debug else []), *args]
        return _run(argv, self.env, check=check, timeout=timeout)

    def usable(self) -> str | None:
        """None when podman works here, else why not (for pytest.skip)."""
        if shutil.which(self.exe) is None:
            return "podman is not installed"
        proc = self.run("info", "--format", "json", check=False, debug=False, timeout=60)
        if proc.returncode != 0:
            return f"podman cannot run here: {proc.stderr.strip()[-500:]}"
        return None

    def pull(self, ref: str, *extra: str) -> str:
        """Pull `ref`; return the image ID podman prints."""
        out = self.run("pull", "--quiet", *extra, ref).stdout.strip().splitlines()
        return out[-1] if out else ""

    def tag(self, image: str, name: str) -> None:
        self.run("tag", image, name)

    def push(self, image: str, dest: str, *extra: str) -> str:
        """Push `image` to `dest` (docker://... implied); return the pushed manifest digest."""
        digest_file = self.root / "tmp" / "push-digest"
        digest_file.unlink(missing_ok=True)
        self.run("push", "--digestfile", str(digest_file), *extra, image, dest)
        return digest_file.read_text().strip()

    def image_inspect(self, image: str) -> dict[str, Any]:
        data = json.loads(self.run("image", "inspect", image, debug=False).stdout)
        return data[0]  # type: ignore[no-any-return]

    def rmi(self, *images: str) -> None:
        self.run("rmi", "--force", *images, debug=False)

    def images(self) -> list[dict[str, Any]]:
        out = self.run("images", "--format", "json", debug=False).stdout
        return json.loads(out or "[]")  # type: ignore[no-any-return]


# ---------------------------------------------------------------- docker CLI (no daemon)


@dataclass
class DockerCLI:
    """The docker CLI with a private DOCKER_CONFIG; only registry-side commands work."""

    root: Path
    exe: str = field(default_factory=lambda: find_docker_cli() or "docker")

    def __post_init__(self) -> None:
        self.config_dir = self.root / "docker-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.env = _sandbox_env(self.root)
        self.env["DOCKER_CONFIG"] = str(self.config_dir)
        # no daemon: make sure no ambient DOCKER_HOST or context points at one
        self.env.pop("DOCKER_HOST", None)
        self.env.pop("DOCKER_CONTEXT", None)

    def run(self, *args: str, check: bool = True, timeout: float = 60.0,
            ) -> Result:
        return _run([self.exe, *args], self.env, check=check, timeout=timeout)

    def manifest_inspect(self, ref: str, *, verbose: bool = False) -> Any:
        args = ["manifest", "inspect", "--insecure", *(["--verbose"] if verbose else []), ref]
        return json.loads(self.run(*args).stdout)
