"""`dockyard copy SRC DST`: images, indexes and repositories between registries and OCI
layouts, digests preserved.

    dockyard copy docker://quay.io/org/app:1.2 docker://registry.local:5000/app:1.2
    dockyard copy --all-tags docker://upstream.example/tools docker://127.0.0.1:5000/tools
    dockyard copy --platform linux/arm64 oci:./layout:v1 127.0.0.1:5000/app:v1-arm64
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import click

from dockyard.copying.connect import Access, open_end
from dockyard.copying.engine import Copier, CopyError, CopyOptions
from dockyard.copying.layout_end import ImageLayout, LayoutError
from dockyard.copying.platforms import Platform
from dockyard.copying.refs import BadReference, ImageRef, LayoutRef, RegistryRef, parse
from dockyard.copying.registry_end import RegistryRepository
from dockyard.oci.errors import one_line
from dockyard.oci.reference import invalid_tags, is_valid_tag, left_out
from dockyard.regex import Regex, compile_regex
from dockyard.remote.auth import AuthError
from dockyard.remote.certs import CertDirError
from dockyard.remote.client import RegistryClientError
from dockyard.remote.credentials import AuthFileError, Credentials, check_named_auth_file


def _ref(text: str, what: str) -> ImageRef:
    try:
        return parse(text)
    except BadReference as exc:
        raise click.UsageError(f"{what}: {exc}") from None


def _creds(text: str | None, option: str) -> Credentials | None:
    if text is None:
        return None
    try:
        return Credentials.parse(text)
    except ValueError as exc:
        raise click.UsageError(f"{option}: {exc}") from None


def check_authfile(authfile: Path | None) -> None:
    """The auth file the user named (`--authfile`, `$REGISTRY_AUTH_FILE`) is used or the
    command stops (exit 2): never anonymous instead."""
    try:
        check_named_auth_file(authfile)
    except AuthFileError as exc:
        raise click.BadParameter(exc.reason, param_hint=exc.option) from None


#: what OpenSSL says when the server answers a TLS hello in plain HTTP
_PLAIN_HTTP = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE",
                         "PACKET_LENGTH_TOO_LONG"})


def _plain_http_hint(exc: BaseException, ends: list[tuple[str, str]]) -> str:
    """A hint for an end that answered plain HTTP where TLS was expected (a registry on
    loopback or a private network), naming the options that allow it; else ""."""
    seen: BaseException | None = exc
    while seen is not None:
        if (isinstance(seen, aiohttp.ClientConnectorError)
                and getattr(seen.os_error, "reason", None) in _PLAIN_HTTP):
            host = f"[{seen.host}]" if ":" in seen.host else seen.host
            address = f"{host}:{seen.port}"
            options = [f"{o}=false" for h, o in ends
                       if h == address or (h == host and seen.port == 443)]
            allow = " and ".join(options) or "--src-tls-verify=false/--dest-tls-verify=false"
            return f" ({address} answers plain HTTP, not TLS; for HTTP use {allow})"
        seen = seen.__cause__ or seen.__context__
    return ""


#: what a registry or a layout raises outside the copier, which names the end itself
_OUTSIDE_A_COPY = (RegistryClientError, AuthError, LayoutError, aiohttp.ClientError,
                   TimeoutError, OSError)


async def _opened(stack: AsyncExitStack, ref: ImageRef, access: Access, text: str
                  ) -> RegistryRepository | ImageLayout:
    """The end `ref` names, opened on `stack`; a failure to open it is a `CopyError`
    naming that end (`text`, as the user wrote it), not the source whatever failed."""
    try:
        return await stack.enter_async_context(open_end(ref, access))
    except _OUTSIDE_A_COPY as exc:
        raise CopyError(f"{text}: {one_line(exc)}") from exc


def _platforms(values: tuple[str, ...]) -> tuple[Platform, ...]:
    try:
        return tuple(Platform.parse(v) for v in values)
    except ValueError as exc:
        raise click.UsageError(f"--platform: {exc}") from None


def _tag_filter(glob: str | None, regex: str | None) -> Regex | None:
    if glob is not None and regex is not None:
        raise click.UsageError("--tags and --tags-regex cannot be used together")
    if glob is not None:
        return re.compile(fnmatch.translate(glob))
    if regex is not None:
        try:
            return compile_regex(regex)
        except ValueError as exc:
            raise click.UsageError(f"--tags-regex: {exc}") from None
    return None


@click.command("copy")
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@click.option("--all-tags", "-a", is_flag=True, help="Copy every tag of the SRC repository.")
@click.option("--tags", "tags_glob", metavar="GLOB", help="Copy the tags matching GLOB.")
@click.option("--tags-regex", metavar="REGEX", help="Copy the tags matching REGEX (whole tag).")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Keep only these platforms of an index (a new index). Repeatable.")
@click.option("--referrers", is_flag=True,
              help="Also copy signatures, SBOMs and attestations attached to the images.")
@click.option("--dry-run", is_flag=True, help="Say what would be copied; write nothing.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Blobs (and tags) copied at once.")
@click.option("--src-creds", metavar="USER:PASSWORD", help="Credentials for SRC.")
@click.option("--dest-creds", metavar="USER:PASSWORD", help="Credentials for DST.")
@click.option("--authfile", type=click.Path(path_type=Path, dir_okay=False),
              help="Auth file to read credentials from (default: $REGISTRY_AUTH_FILE, "
                   "containers auth.json, ~/.docker/config.json).")
@click.option("--src-tls-verify", type=bool, default=True, show_default=True,
              help="Verify SRC's TLS certificate; false also allows plain HTTP.")
@click.option("--dest-tls-verify", type=bool, default=True, show_default=True,
              help="Verify DST's TLS certificate; false also allows plain HTTP.")
@click.option("--src-cert-dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="CAs (*.crt) and client certificates (*.cert + *.key) for SRC "
                   "(default: its certs.d directory, as podman's).")
@click.option("--dest-cert-dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="CAs (*.crt) and client certificates (*.cert + *.key) for DST "
                   "(default: its certs.d directory, as podman's).")
def copy(src: str, dst: str, all_tags: bool, tags_glob: str | None, tags_regex: str | None,
         platforms: tuple[str, ...], referrers: bool, dry_run: bool, jobs: int,
         src_creds: str | None, dest_creds: str | None, authfile: Path | None,
         src_tls_verify: bool, dest_tls_verify: bool, src_cert_dir: Path | None,
         dest_cert_dir: Path | None) -> None:
    """Copy an image, an index or a repository from SRC to DST, digests preserved.

    SRC and DST are docker://HOST[:PORT]/REPO[:TAG|@DIGEST] (docker:// may be left out)
    or oci:PATH[:TAG] (an OCI image layout directory).
    """
    source, dest = _ref(src, "SRC"), _ref(dst, "DST")
    check_authfile(authfile)
    pattern = _tag_filter(tags_glob, tags_regex)
    repository_copy = all_tags or pattern is not None
    if repository_copy and source.reference:
        raise click.UsageError("SRC must name a repository (no tag or digest) with "
                               "--all-tags/--tags")
    if dest.digest:
        raise click.UsageError("DST cannot name a digest: manifests keep theirs")
    if repository_copy and dest.tag:
        raise click.UsageError("DST must name a repository (no tag) with --all-tags/--tags")
    options = CopyOptions(platforms=_platforms(platforms), referrers=referrers,
                          dry_run=dry_run, jobs=jobs)
    src_access = Access(_creds(src_creds, "--src-creds"), src_tls_verify, authfile,
                        connections=jobs * 4 + 4, cert_dir=src_cert_dir)
    dst_access = Access(_creds(dest_creds, "--dest-creds"), dest_tls_verify, authfile,
                        connections=jobs * 4 + 4, cert_dir=dest_cert_dir)
    if source.reference is None and not repository_copy and not isinstance(source, LayoutRef):
        source = source.with_reference(tag="latest")
    if (isinstance(dest, LayoutRef) and not dest.tag and not repository_copy
            and source.digest):
        # a layout SRC without a tag names its one image, whose ref.name is the tag
        raise click.UsageError("DST oci:PATH needs a tag when SRC is named by digest")

    async def run() -> str:
        async with AsyncExitStack() as stack:
            src_end = await _opened(stack, source, src_access, src)
            dst_end = await _opened(stack, dest, dst_access, dst)
            from dockyard.cli.copy_progress import display

            with display() as progress:
                copier = Copier(src_end, dst_end, options, progress)
                stack.push_async_callback(copier.close)  # before the ends close
                if repository_copy:
                    tags = await src_end.tags()
                    if odd := invalid_tags(tags):
                        progress.note(f"{src}: {left_out(odd)}")
                    chosen = [t for t in tags if is_valid_tag(t)
                              and (pattern is None or pattern.fullmatch(t))]
                    if not chosen:
                        raise CopyError(f"{src}: no tag matches")
                    await copier.copy_tags(chosen)
                else:
                    reference, tag = source.reference, dest.tag or source.tag
                    if reference is None:
                        assert isinstance(src_end, ImageLayout)
                        reference, name = await src_end.only_manifest()
                        tag = tag or name
                        if tag is None:  # pushed untagged, the collector would free it
                            raise click.UsageError(
                                f"DST needs a tag: {src}'s image has no "
                                "org.opencontainers.image.ref.name (DST REPO:TAG)")
                    await copier.copy(reference, tag)
            return copier.summary.line(dry_run)

    ends = [(ref.host, option) for ref, option, verify in (
        (source, "--src-tls-verify", src_tls_verify),
        (dest, "--dest-tls-verify", dest_tls_verify)) if isinstance(ref, RegistryRef) and verify]
    try:
        click.echo(asyncio.run(run()))
    except CopyError as exc:
        raise click.ClickException(f"{exc}{_plain_http_hint(exc, ends)}") from None
    except CertDirError as exc:
        raise click.ClickException(str(exc)) from None
    except _OUTSIDE_A_COPY as exc:  # the listing of --all-tags
        raise click.ClickException(f"{src}: {one_line(exc)}{_plain_http_hint(exc, ends)}"
                                   ) from None
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to finish (what arrived stays)",
                   err=True)
        raise SystemExit(130) from None
