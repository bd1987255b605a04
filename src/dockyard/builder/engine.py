"""Container engines behind one small interface: buildah (default), podman, docker.

Every engine call is a subprocess whose output goes straight into the image's log file
(never buffered in memory); a non-zero exit raises `EngineError` with the log's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class EngineError(RuntimeError):
    """An engine command failed; the message names the command and the log file."""


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """One `build`: a Dockerfile (rendered, in the work dir) over the catalogue root."""

    dockerfile: Path
    context: Path
    tags: list[str]
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    timestamp: int | None = None
    no_cache: bool = False
    platforms: list[str] = field(default_factory=list)


class Engine(Protocol):
    """What the builder asks of an engine."""

    name: str

    async def build(self, request: BuildRequest, log: Path) -> None: ...

    async def pull(self, image: str, log: Path) -> None: ...

    async def run(self, image: str, command: str, log: Path) -> None: ...

    async def push(self, image: str, dest: str, log: Path) -> str: ...

    async def read_file(self, image: str, path: str, log: Path) -> bytes | None:
        """The file at `path` in the image's root filesystem, or None if it has none."""
        ...

    async def layers(self, image: str, log: Path) -> list[str]:
        """The image's layer diff IDs (digests of the uncompressed layers), in order."""
        ...


async def run_logged(argv: list[str], env: dict[str, str], log: Path) -> None:
    """Run `argv` with stdout and stderr appended to `log`; raise on failure."""
    with log.open("ab") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            await stop(proc)
            raise
    if code != 0:
        raise EngineError(f"{Path(argv[0]).name} {argv[1]} exited with {code} (log: {log})")


#: seconds a stopped engine command gets to clean up after SIGTERM before SIGKILL
STOP_GRACE = 10.0


async def stop(proc: asyncio.subprocess.Process) -> None:
    """End an engine command being cancelled (a timeout, ^C): SIGTERM first, so that
    buildah removes its build container and podman its own state, SIGKILL after
    `STOP_GRACE` seconds. Shielded: it runs while its caller is being cancelled."""
    async def end() -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    await asyncio.shield(end())


def container_name() -> str:
    """A name for a test command's container, so that it can be removed when stopped."""
    return f"dockyard-test-{secrets.token_hex(6)}"


async def run_test(argv: list[str], remove: list[str], env: dict[str, str], log: Path
                   ) -> None:
    """Run a test's container (`argv`, naming it); cancelled (its `test_timeout`, ^C,
    SIGTERM), remove it with `remove`, the engine's forced `rm` of that name, first:
    killing the `run` command leaves its container running (conmon or the daemon holds
    it), and stopping `run` first waits out `STOP_GRACE` when the container's PID 1
    ignores SIGTERM (a `sleep` does), while `rm --force` ends it at once and `run` with
    it. Then `run` is stopped, and the removal tried again if the first one found no
    container (it was still being created). Shielded, as all this runs while the
    caller is being cancelled; a removal that fails is moot."""
    running = asyncio.ensure_future(run_logged(argv, env, log))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        if running.done():  # it ended as the cancellation came: nothing left to end
            if not running.cancelled():
                running.exception()  # retrieved: the cancellation is what is raised
            raise
        removed = await asyncio.shield(_removed(remove, env, log))
        running.cancel()
        await asyncio.shield(asyncio.wait([running]))
        if not removed:
            await asyncio.shield(_removed(remove, env, log))
        raise


async def _removed(remove: list[str], env: dict[str, str], log: Path) -> bool:
    """Run a container's forced removal; whether it succeeded."""
    try:
        await run_logged(remove, env, log)
    except (EngineError, OSError):
        return False
    return True


async def run_captured(argv: list[str], env: dict[str, str], log: Path) -> str:
    """Run `argv` for its (short) standard output; stderr goes to `log`."""
    with log.open("ab") as errors:
        errors.write(("$ " + " ".join(argv) + "\n").encode())
        errors.flush()
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=errors)
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:
            await stop(proc)
            raise
    if proc.returncode != 0:
        raise EngineError(f"{Path(argv[0]).name} {argv[1]} exited with {proc.returncode} "
                          f"(log: {log})")
    return out.decode().strip()


READ_LIMIT = 64 * 1024 * 1024
"""The largest file `read_file` reads out of an image (a package database)."""


def read_inside(root: Path, path: str, limit: int) -> bytes | None:
    """The regular file at `path` under `root` as the image sees it, None when there is
    none. Symbolic links are resolved as inside the image (an absolute target from
    `root`, `..` never above it; merged-/usr images link `/lib` to `usr/lib`), so an
    image cannot make the builder, running as root, read a file of the host.
    `EngineError` past `limit` bytes."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            links += 1
            if links > 40:  # a loop (Linux gives up at 40 too)
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        if todo and not stat.S_ISDIR(mode):
            return None
        done.append(part)
    if not done:
        return None
    try:  # every component is resolved: the open follows nothing
        fd = os.open(root.joinpath(*done), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise EngineError(f"{path} is larger than {limit >> 20} MiB")
    return data


def _exe(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise EngineError(f"{name} is not installed")
    return found


class _CliEngine:
    """The parts buildah and podman share (their build flags are the same)."""

    name = ""
    build_verb: list[str] = []

    def __init__(self, env: dict[str, str], *, tls_verify: bool = True) -> None:
        self.env = env
        self.tls_verify = tls_verify
        self.exe = _exe(self.name)

    def _build_argv(self, r: BuildRequest) -> list[str]:
        # --force-rm: a failed or stopped build removes its working container (buildah's
        # default keeps it: with the vfs driver, a whole copy of the image's files)
        argv = [self.exe, *self.build_verb, "--layers", "--force-rm", "--pull=never", "-f",
                str(r.dockerfile)]
        for tag in r.tags:
            argv += ["-t", tag]
        for k, v in sorted(r.build_args.items()):
            argv += ["--build-arg", f"{k}={v}"]
        for k, v in sorted(r.labels.items()):
            argv += ["--label", f"{k}={v}"]
        for k, v in sorted(r.annotations.items()):
            argv += ["--annotation", f"{k}={v}"]
        if r.timestamp is not None:
            argv += ["--timestamp", str(r.timestamp)]
        if r.no_cache:
            argv.append("--no-cache")
        if r.platforms:
            argv += ["--platform", ",".join(r.platforms)]
        return [*argv, str(r.context)]

    async def build(self, request: BuildRequest, log: Path) -> None:
        await run_logged(self._build_argv(request), self.env, log)

    async def pull(self, image: str, log: Path) -> None:
        await run_logged([self.exe, "pull", f"--tls-verify={str(self.tls_verify).lower()}",
                          image], self.env, log)

    async def run(self, image: str, command: str, log: Path) -> None:
        podman = _exe("podman")
        name = container_name()
        await run_test([podman, "run", "--rm", "--name", name, "--network=none", image,
                        "/bin/sh", "-c", command],
                       [podman, "rm", "--force", "--time", "0", name], self.env, log)

    async def push(self, image: str, dest: str, log: Path) -> str:
        digestfile = log.with_suffix(".digest")
        await run_logged([self.exe, "push", f"--tls-verify={str(self.tls_verify).lower()}",
                          "--digestfile", str(digestfile), image, f"docker://{dest}"],
                         self.env, log)
        return digestfile.read_text().strip()


    async def read_file(self, image: str, path: str, log: Path) -> bytes | None:
        """Through a working container of the image, mounted (the builder runs as root)."""
        buildah = _exe("buildah")  # podman's images are buildah's: one storage
        container = await run_captured([buildah, "from", "--pull=never", image], self.env, log)
        try:
            mount = await run_captured([buildah, "mount", container], self.env, log)
            return await asyncio.to_thread(read_inside, Path(mount), path, READ_LIMIT)
        finally:
            await run_logged([buildah, "rm", container], self.env, log)


    async def layers(self, image: str, log: Path) -> list[str]:
        out = await run_captured([_exe("buildah"), "inspect", "--type", "image", image],
                                 self.env, log)
        rootfs = (json.loads(out).get("OCIv1") or {}).get("rootfs") or {}
        return [str(d) for d in rootfs.get("diff_ids") or []]


class Buildah(_CliEngine):
    """`buildah bud --layers`: no daemon (the default engine)."""

    name = "buildah"
    build_verb = ["bud"]


class Podman(_CliEngine):
    """`podman build`, sharing buildah's storage configuration."""

    name = "podman"
    build_verb = ["build"]


class Docker:
    """`docker build` against a Docker daemon (BuildKit), for hosts that run one.

    The daemon decides which registries may be plain HTTP (its `insecure-registries`;
    loopback always may), so `tls_verify` is not a flag of these commands. Credentials
    given to the builder reach docker as a `DOCKER_CONFIG` directory whose config.json
    is the builder's auth file (the two share the `auths` format). Build timestamps go
    in as `SOURCE_DATE_EPOCH`, which BuildKit applies to the image; the builder adds
    its OCI annotations at publish time, so none are passed to `docker build`.
    """

    name = "docker"

    def __init__(self, env: dict[str, str], *, tls_verify: bool = True) -> None:
        self.env = dict(env)
        self.tls_verify = tls_verify
        self.exe = _exe("docker")
        auth = env.get("REGISTRY_AUTH_FILE")
        if auth and "DOCKER_CONFIG" not in env:
            config = Path(auth).parent / "docker-config"
            config.mkdir(parents=True, exist_ok=True)
            link = config / "config.json"
            link.unlink(missing_ok=True)
            link.symlink_to(Path(auth).resolve())
            self.env["DOCKER_CONFIG"] = str(config)

    def _build_argv(self, r: BuildRequest) -> list[str]:
        argv = [self.exe, "build", "-f", str(r.dockerfile)]
        for tag in r.tags:
            argv += ["-t", tag]
        args = dict(r.build_args)
        if r.timestamp is not None:
            args.setdefault("SOURCE_DATE_EPOCH", str(r.timestamp))
        for k, v in sorted(args.items()):
            argv += ["--build-arg", f"{k}={v}"]
        for k, v in sorted(r.labels.items()):
            argv += ["--label", f"{k}={v}"]
        if r.no_cache:
            argv.append("--no-cache")
        if r.platforms:
            argv += ["--platform", ",".join(r.platforms)]
        return [*argv, str(r.context)]

    async def build(self, request: BuildRequest, log: Path) -> None:
        await run_logged(self._build_argv(request), self.env, log)

    async def pull(self, image: str, log: Path) -> None:
        await run_logged([self.exe, "pull", image], self.env, log)

    async def run(self, image: str, command: str, log: Path) -> None:
        name = container_name()
        await run_test([self.exe, "run", "--rm", "--name", name, "--network=none", image,
                        "/bin/sh", "-c", command],
                       [self.exe, "rm", "--force", name], self.env, log)

    async def push(self, image: str, dest: str, log: Path) -> str:
        if dest != image:
            await run_logged([self.exe, "tag", image, dest], self.env, log)
        await run_logged([self.exe, "push", dest], self.env, log)
        out = await run_captured([self.exe, "image", "inspect", "--format",
                                  "{{json .RepoDigests}}", dest], self.env, log)
        repository = dest.rsplit(":", 1)[0] if ":" in dest.rsplit("/", 1)[-1] else dest
        for entry in json.loads(out) or []:
            name, _, digest = str(entry).partition("@")
            if name == repository and digest:
                return digest
        raise EngineError(f"docker push {dest}: no digest for {repository} (log: {log})")

    async def read_file(self, image: str, path: str, log: Path) -> bytes | None:
        """Copied out of a created (never started) container of the image."""
        container = await run_captured([self.exe, "create", image, "/bin/true"],
                                       self.env, log)
        try:
            with log.open("ab") as errors:
                proc = await asyncio.create_subprocess_exec(
                    self.exe, "cp", f"{container}:{path}", "-", env=self.env,
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=errors)
                assert proc.stdout is not None
                pieces: list[bytes] = []
                size = 0
                try:
                    while piece := await proc.stdout.read(1024 * 1024):
                        size += len(piece)
                        if size > READ_LIMIT + 1024 * 1024:  # the file and its tar header
                            raise EngineError(f"{path} in {image} is larger than "
                                              f"{READ_LIMIT >> 20} MiB (log: {log})")
                        pieces.append(piece)
                finally:
                    if proc.returncode is None and not proc.stdout.at_eof():
                        proc.kill()
                    await proc.wait()
                archive = b"".join(pieces)
            if proc.returncode != 0:
                return None  # no such file in the image
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                member = next((m for m in tar.getmembers() if m.isfile()), None)
                extracted = tar.extractfile(member) if member is not None else None
                return extracted.read() if extracted is not None else None
        finally:
            await run_logged([self.exe, "rm", container], self.env, log)

    async def layers(self, image: str, log: Path) -> list[str]:
        out = await run_captured([self.exe, "image", "inspect", "--format",
                                  "{{json .RootFS.Layers}}", image], self.env, log)
        return [str(d) for d in json.loads(out) or []]


ENGINES: dict[str, type[_CliEngine] | type[Docker]] = {
    "buildah": Buildah, "podman": Podman, "docker": Docker}


def make_engine(name: str, env: dict[str, str], *, tls_verify: bool) -> Engine:
    try:
        return ENGINES[name](env, tls_verify=tls_verify)
    except KeyError:
        raise EngineError(f"{name}: unknown engine (one of {', '.join(ENGINES)})") from None
