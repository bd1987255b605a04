"""`dockyard rm`: delete repositories, tags or manifests by pattern, on any registry.

    dockyard rm 'toollabs-*'              whole repositories (Dockyard's admin API)
    dockyard rm 'tools/*:*-rc*'           tags matching a glob (the manifests stay until
                                          nothing else tags them; the collector frees them)
    dockyard rm repo@sha256:...           a manifest and every tag on it
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import sys
from dataclasses import dataclass

import aiohttp
import click

from dockyard.config.types import http_url
from dockyard.globs import glob_matches, is_glob
from dockyard.oci.digest import Digest
from dockyard.oci.errors import DigestInvalid, NameInvalid, one_line
from dockyard.oci.reference import MAX_NAME_LENGTH, is_valid_tag, validate_name
from dockyard.remote.auth import AuthError
from dockyard.remote.certs import CertDirError
from dockyard.remote.client import RegistryClient, RegistryClientError
from dockyard.remote.credentials import Credentials

_REF = re.compile(r"(?P<repo>[^:@]+)(?::(?P<tag>[^@]+)|@(?P<digest>.+))?")


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to delete: a repository, a tag, or a manifest by digest."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        if self.tag:
            return f"{self.repository}:{self.tag}"
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository} (repository)"


#: what a repository or tag glob may hold: the grammar's characters and the glob's own
_NAME_GLOB = re.compile(r"[a-z0-9._/*?\[\]!-]+")
_TAG_GLOB = re.compile(r"[A-Za-z0-9._*?\[\]!-]+")


def parse_ref(text: str) -> tuple[str, str | None, str | None]:
    """REPO[:TAG|@DIGEST] split; a name, tag or digest no registry could hold is a usage
    error (exit 2), not a request the registry refuses or a pattern nothing matches."""
    m = _REF.fullmatch(text)
    if not m:
        raise click.BadParameter(f"{text!r}: expected REPO[:TAG|@DIGEST] (globs allowed)")
    repo, tag, digest = m.group("repo", "tag", "digest")
    if digest is not None:
        try:
            Digest.parse(digest)
        except DigestInvalid as exc:
            raise click.BadParameter(f"{text!r}: {exc.message}") from None
    if not (_NAME_GLOB.fullmatch(repo) if is_glob(repo) else _valid_name(repo)) \
            or len(repo) > MAX_NAME_LENGTH:
        raise click.BadParameter(f"{_short(text)}: invalid repository name "
                                 f"{_short(repo)} (lower-case a-z, 0-9, . _ - and /, at most "
                                 f"{MAX_NAME_LENGTH} characters)")
    if tag is not None and not (_TAG_GLOB.fullmatch(tag) if is_glob(tag)
                                else is_valid_tag(tag)):
        raise click.BadParameter(f"{_short(text)}: invalid tag {_short(tag)} (A-Z, a-z, 0-9, "
                                 ". _ -, at most 128 characters)")
    return repo, tag, digest


def _short(text: str) -> str:
    """`text` quoted, cut to 60 characters (a name of hundreds stays one short line)."""
    return repr(text) if len(text) <= 60 else repr(text[:60]) + "..."


def _valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except NameInvalid:
        return False
    return True


async def _tags(client: RegistryClient, name: str) -> list[str] | None:
    """The tags of `name`; None when the registry does not know the repository."""
    try:
        return [t async for t in client.tags(name)]
    except RegistryClientError as exc:
        if exc.status == 404:
            return None
        raise


async def _holds(client: RegistryClient, name: str, digest: str) -> bool:
    """Whether `name` has manifest `digest` (a dry run listed a digest no repository
    held, and a repository glob deleted in every match and failed in those without
    it); True when the registry does not let us look (the DELETE decides)."""
    try:
        return await client.head_manifest(name, digest) is not None
    except RegistryClientError as exc:
        if exc.status in (401, 403):
            return True
        raise


async def resolve(client: RegistryClient, refs: list[tuple[str, str | None, str | None]]
                  ) -> list[Target]:
    """Expand the globs of every reference against the registry's catalog and tags.

    The catalog is read only when a repository is a glob: an exact name is looked up
    by its tag list, so deleting one's own tags needs no `registry:catalog:*` (a CI
    account cleaning up after itself)."""
    repos: list[str] = []
    if any(is_glob(repo) for repo, _, _ in refs):
        try:
            repos = [r async for r in client.repositories()]
        except RegistryClientError as exc:
            if exc.status not in (401, 403):
                raise
            raise RegistryClientError(exc.status, f"reading the catalog, which a repository "
                                      f"glob needs: {exc}", exc.codes) from None
    targets: list[Target] = []
    for repo_glob, tag_glob, digest in refs:
        names = ([r for r in repos if glob_matches(r, repo_glob)]
                 if is_glob(repo_glob) else [repo_glob])
        for name in names:
            if digest:
                if await _holds(client, name, digest):
                    targets.append(Target(name, digest=digest))
            elif tag_glob:
                targets += [Target(name, tag=t) for t in await _tags(client, name) or []
                            if fnmatch.fnmatchcase(t, tag_glob)]
            elif is_glob(repo_glob) or await _tags(client, name) is not None:
                targets.append(Target(name))
    return list(dict.fromkeys(targets))


async def delete(client: RegistryClient, target: Target) -> None:
    if target.digest:
        await client.delete_manifest(target.repository, target.digest)
    elif target.tag:
        await client.delete_manifest(target.repository, target.tag)
    else:
        await client.delete_repository(target.repository)


def failure(where: str, exc: BaseException) -> str:
    """One line for what went wrong asking the registry (a time limit, whose message is
    empty, says so: the line was `http://host:port: ` and nothing)."""
    return f"{where}: {one_line(exc)}"


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="REPO[:TAG|@DIGEST]...")
@click.option("--registry", default="http://127.0.0.1:5000", show_default=True,
              help="Base URL of the registry.")
@click.option("--username", help="User for Basic authentication.")
@click.option("--password", help="Password (or set it in the prompt).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting several things.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def rm(refs: tuple[str, ...], registry: str, username: str | None, password: str | None,
       yes: bool, dry_run: bool) -> None:
    """Delete repositories, tags or manifests; shell globs match repositories and tags."""
    if not http_url(registry.rstrip("/")):
        raise click.BadParameter(f"{registry.split('@')[-1]!r} is not an http:// or "
                                 "https:// URL (HOST[:PORT]) without user:password@",
                                 param_hint="--registry")
    parsed = [parse_ref(r) for r in refs]
    auth = None
    if username:
        if password is None:
            if sys.stdin.isatty():
                password = click.prompt("Password", hide_input=True)
            else:  # piped (`echo "$PW" | dockyard rm --username u ...`): its first line
                password = sys.stdin.readline().rstrip("\r\n")
                if not password:
                    raise click.UsageError("--username: no password on standard input "
                                           "(nor --password)")
        auth = Credentials(username, password or "")

    async def find() -> list[Target]:
        async with RegistryClient(registry, credentials=auth) as client:
            return await resolve(client, parsed)

    async def run(targets: list[Target]) -> int:
        failed = 0
        async with RegistryClient(registry, credentials=auth) as client:
            for target in targets:
                try:
                    await delete(client, target)
                    click.echo(f"deleted {target}")
                except (RegistryClientError, AuthError, aiohttp.ClientError,
                        TimeoutError) as exc:
                    failed += 1  # the connection too: said, and the others still tried
                    click.echo(failure(str(target), exc), err=True)
        return failed

    try:
        targets = asyncio.run(find())
    except (RegistryClientError, AuthError, aiohttp.ClientError, TimeoutError,
            CertDirError) as exc:
        raise click.ClickException(failure(registry, exc)) from None
    if not targets:
        raise click.ClickException("nothing matches " + " ".join(refs))
    if dry_run:
        for target in targets:
            click.echo(f"would delete {target}")
        return
    if len(targets) > 1 and not yes:
        for target in targets:
            click.echo(f"  {target}")
        if not click.confirm(f"Delete these {len(targets)}?", default=False):
            raise click.Abort()
    if asyncio.run(run(targets)):
        raise SystemExit(1)
