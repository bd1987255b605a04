"""Credentials for a registry host: given on the command line or found in auth files.

Auth files are the JSON written by `docker login` and `podman login`
(`{"auths": {"host": {"auth": base64("user:pass")}}}`), looked up in the order podman
uses: `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`, then Docker's
`$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). Those found by default
are optional (a missing or unreadable one is skipped); the one a user names
(`--authfile`, else `$REGISTRY_AUTH_FILE`) must be there and valid
(`check_named_auth_file`), or the command stops instead of going on anonymously.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Docker Hub's names in auth files, all meaning the same registry.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password (or identity token) for one registry."""

    username: str
    password: str

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """`user:password` (as `--src-creds`); raise ValueError when there is no colon."""
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise ValueError("credentials must be USER:PASSWORD")
        return cls(user, password)

    def __repr__(self) -> str:  # never print a password
        return f"Credentials({self.username!r}, ***)"


class AuthFileError(ValueError):
    """A named auth file that cannot be used: `option` is how it was named (`--authfile`,
    `$REGISTRY_AUTH_FILE`), `reason` names the file and what is wrong with it."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


def _auths(path: Path, option: str = "--authfile") -> dict[str, Any]:
    """The `auths` object of the auth file at `path` (empty when it has none);
    AuthFileError naming the file and what is wrong when it cannot be read as one."""

    def bad(why: str) -> AuthFileError:
        return AuthFileError(option, f"{path}: {why}")

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise bad(f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise bad(f"not UTF-8 text (byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
                  ) from None
    except RecursionError:  # a file of a hundred thousand `[`
        raise bad("not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise bad("not an auth file: not a JSON object")
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise bad('not an auth file: "auths" is not a JSON object')
    return auths


def check_auth_file(path: Path, option: str = "--authfile") -> None:
    """AuthFileError unless `path` reads as an auth file: a JSON object whose `auths`,
    if any, maps hosts to objects, each `auth` the base64 of USER:PASSWORD (never the
    values in the message)."""
    for key, entry in _auths(path, option).items():
        if not isinstance(entry, dict):
            raise AuthFileError(option, f'{path}: not an auth file: "auths" entry {key!r} '
                                        "is not a JSON object")
        if entry.get("auth") and _decode(entry) is None:
            raise AuthFileError(option, f'{path}: "auths" entry {key!r}: "auth" is not the '
                                        "base64 of USER:PASSWORD")


def check_named_auth_file(given: Path | None, env: Mapping[str, str] | None = None
                          ) -> None:
    """AuthFileError when the auth file the user named — `given` (`--authfile`), else
    `$REGISTRY_AUTH_FILE` — is missing, unreadable or not an auth file; the default
    files stay optional."""
    env = os.environ if env is None else env
    if given is not None:
        check_auth_file(given, "--authfile")
    elif env.get("REGISTRY_AUTH_FILE"):
        check_auth_file(Path(env["REGISTRY_AUTH_FILE"]), "$REGISTRY_AUTH_FILE")


def auth_files(env: Mapping[str, str] | None = None, uid: int | None = None) -> list[Path]:
    """The auth files to read, first match wins, in containers-auth.json(5)'s order:
    `$REGISTRY_AUTH_FILE`; `podman login`'s file, `$XDG_RUNTIME_DIR/containers/auth.json`
    (without `XDG_RUNTIME_DIR`, as under cron or a systemd unit,
    `/run/containers/$UID/auth.json`); `$XDG_CONFIG_HOME/containers/auth.json`; and
    `docker login`'s `config.json`."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME", str(Path.home())))
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    else:
        files.append(Path("/run/containers") / str(os.getuid() if uid is None else uid)
                     / "auth.json")
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else \
        home / ".config"
    files.append(config_home / "containers" / "auth.json")
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    files.append(docker_dir / "config.json")
    return files


def _key_host(key: str) -> str:
    """`https://host/v1/` -> `host`; `host/namespace` keeps its path (containers-auth)."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
            key = key.split("/", 1)[0]
    return key.rstrip("/")


def _decode(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            text = base64.b64decode(str(entry["auth"]), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = text.partition(":")
        return Credentials(user, password) if sep else None
    if entry.get("username"):
        return Credentials(str(entry["username"]), str(entry.get("password", "")))
    return None


def lookup(host: str, repository: str = "", files: list[Path] | None = None
           ) -> Credentials | None:
    """The credentials stored for `host` (the longest `host/namespace` key matching
    `repository` first, as containers-auth.json allows), or None."""
    names = set(_DOCKER_HUB) if host in _DOCKER_HUB else {host}
    wanted = f"{host}/{repository}" if repository else host
    for path in files if files is not None else auth_files():
        try:
            auths = _auths(path)
        except AuthFileError:  # the files found by default are optional
            continue
        best: tuple[int, Credentials] | None = None
        for key, entry in auths.items():
            norm = _key_host(str(key))
            head, _, path_part = norm.partition("/")
            if head not in names:
                continue
            prefix = f"{host}/{path_part}" if path_part else host
            if wanted != prefix and not wanted.startswith(prefix + "/"):
                continue
            creds = _decode(entry)
            if creds is not None and (best is None or len(prefix) > best[0]):
                best = (len(prefix), creds)
        if best is not None:
            return best[1]
    return None
