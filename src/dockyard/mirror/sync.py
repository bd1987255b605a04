"""One sync of mirror sources: list upstream tags, copy what is new or moved, prune.

Each source is synced on its own: its failures (upstream down, credentials refused, an
invalid manifest) end up in its report and are retried with a doubling backoff, never
touching the other sources. Images move through `copying.engine.Copier` into a
`copying.local_end.LocalRepository` (so through `core`), one `MountHints` shared by the
sources of a run. A finished run (not a dry run) is recorded in the history, and each
tag it set records its origin. A source is synced by one process at a time: the sync
holds the lease `mirror:<name>`, whether the server's schedule or `dockyard sync` runs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dockyard.config.mirror import MirrorSource
from dockyard.config.secrets import read_secret
from dockyard.copying.connect import Access, open_end
from dockyard.copying.ends import MountHints
from dockyard.copying.engine import END_ERRORS, Copier, CopyError, CopyOptions
from dockyard.copying.local_end import LocalRepository
from dockyard.copying.platforms import Platform
from dockyard.copying.refs import RegistryRef
from dockyard.core.leases import LeaseBusy
from dockyard.core.mirrors import COUNTED, RUNS_KEPT, MirrorRun, TagOrigin
from dockyard.core.registry import Registry
from dockyard.mirror.select import matches, select_tags
from dockyard.oci.errors import RegistryError, one_line
from dockyard.oci.reference import invalid_tags, left_out
from dockyard.received import MANIFEST_LIMIT
from dockyard.remote.credentials import AuthFileError, Credentials, check_auth_file

log = logging.getLogger("dockyard.sync")

#: tags of one source copied at once (their blobs share the copier's `jobs` slots)
TAGS_AT_ONCE = 4
#: sources synced at once by one `sync_sources`
SOURCES_AT_ONCE = 4


#: tags a report stored in the sync history names at most of each kind (the counts are
#: whole): a source of 10,000 tags wrote every unchanged one into each of its runs kept
REPORT_NAMES = 1000
#: and its log line, once a run (`mirror.schedule`)
LOGGED_NAMES = 20


class SourceFailed(Exception):
    """The source could not be synced at all; the message is one line, no secret."""


@dataclass
class SourceReport:
    """What one sync of one source did (and, in a dry run, would do)."""

    source: str
    upstream: str
    destination: str
    dry_run: bool = False
    status: str = "ok"  # ok | partial (some tags failed) | failed | busy | replica
    error: str | None = None
    attempts: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    upstream_tags: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    copy: dict[str, Any] = field(default_factory=dict)
    #: what the run chose not to do, and why (a prune held back)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self, names: int | None = None) -> dict[str, Any]:
        """The report as JSON data, every tag named; with `names`, as it is stored and
        logged: each list (and `failed`) cut to its first `names` tags, `counts`
        giving the whole counts and `truncated` whether anything was cut."""
        doc = asdict(self)
        if names is None:
            return doc
        doc["counts"] = {k: len(doc[k]) for k in COUNTED}
        cut = False
        for key in COUNTED:
            if len(doc[key]) > names:
                cut = True
                doc[key] = (dict(sorted(doc[key].items())[:names]) if key == "failed"
                            else doc[key][:names])
        doc["truncated"] = cut
        return doc

    def line(self) -> str:
        would = "would be " if self.dry_run else ""
        if self.status in ("failed", "busy"):
            return f"{self.source}: {self.status}: {self.error}"
        text = (f"{self.source}: {self.upstream} -> {self.destination}: "
                f"{len(self.added)} {would}added, {len(self.updated)} {would}updated, "
                f"{len(self.unchanged)} unchanged, {len(self.pruned)} {would}pruned")
        if self.failed:
            text += f", {len(self.failed)} failed (" + "; ".join(
                f"{t}: {e}" for t, e in sorted(self.failed.items())) + ")"
        for warning in self.warnings:
            text += f"; {warning}"
        return text


def access_for(source: MirrorSource, max_manifest: int = MANIFEST_LIMIT) -> Access:
    """How to reach the upstream: credentials read now from their variable or file, an
    auth file, or (none given) the auth files `dockyard copy` reads, else anonymous;
    manifests read up to `max_manifest` bytes (the registry's own limit)."""
    given = source.credentials
    if given is None:
        return Access(None, source.tls_verify, max_manifest=max_manifest)
    if given.auth_file is not None:
        # read now, as a password file is: a file that cannot be used fails the source
        # instead of letting it go on anonymously
        try:
            check_auth_file(given.auth_file, "credentials.auth_file")
        except AuthFileError as exc:
            raise SourceFailed(str(exc)) from None
        return Access(None, source.tls_verify, given.auth_file, max_manifest=max_manifest)
    assert given.username is not None
    try:
        password = read_secret(given.password_env, given.password_file, "credentials")
    except ValueError as exc:
        raise SourceFailed(str(exc)) from None
    assert password is not None  # the model requires one with a username
    return Access(Credentials(given.username, password), source.tls_verify,
                  max_manifest=max_manifest)


class _LogProgress:
    """The engine's progress as debug lines of the sync's log."""

    def __init__(self, source: str) -> None:
        self.source = source

    def blob_started(self, digest: str, size: int) -> None:
        pass

    def blob_advanced(self, digest: str, nbytes: int) -> None:
        pass

    def blob_finished(self, digest: str, outcome: str, size: int) -> None:
        log.debug("sync %s: blob %s %s", self.source, digest, outcome)

    def note(self, message: str) -> None:
        log.debug("sync %s: %s", self.source, message)


Sleep = Callable[[float], Awaitable[None]]


class Siblings:
    """The other configured sources writing into the same local repository, and which
    tags each selects: a tag one of them selects is neither pruned by this source nor
    its origin taken over (origins are per tag, one source each)."""

    def __init__(self, source: MirrorSource, configured: Sequence[MirrorSource],
                 upstream_tags: Sequence[str]) -> None:
        self.others = [s for s in configured if s.key != source.key and s.local == source.local]
        self._same_upstream = {s.key: set(select_tags(s, upstream_tags)) for s in self.others
                               if (s.registry, s.upstream_repository)
                               == (source.registry, source.upstream_repository)}

    def selecting(self, tag: str) -> list[MirrorSource]:
        """The others that select `tag`: exactly when they list the same upstream (this
        run's listing), else by their globs or expression (their newest N is theirs to
        apply: their own sync prunes what it does not keep)."""
        return [s for s in self.others
                if (tag in self._same_upstream[s.key] if s.key in self._same_upstream
                    else matches(s, tag))]

    def keeping(self, tag: str) -> list[MirrorSource]:
        """The others that select `tag` from this run's listing of the same upstream
        (exactly): a prune hands the tag to one of them. Not a source of another
        upstream: what its newest-N keeps is known to its own run only, and two such
        sources handing a tag back and forth kept it for ever."""
        return [s for s in self.others if tag in self._same_upstream.get(s.key, ())]

    def owner_selects(self, owner: str, tag: str) -> bool:
        """Whether `owner` is another configured source that still selects `tag`."""
        return any(s.key == owner for s in self.selecting(tag))


async def sync_source(registry: Registry, source: MirrorSource, *, dry_run: bool = False,
                      prune: bool | None = None, hints: MountHints | None = None,
                      sleep: Sleep = asyncio.sleep, configured: Sequence[MirrorSource] = ()
                      ) -> SourceReport:
    """Sync one source, retrying a failed pass `source.retries` times with a doubling
    backoff (each wait at most the source's schedule); record the run (not a dry run).
    Never raises for the source's failures. `configured` are all the configured sources:
    what another one writing into the same repository selects is not pruned (nor its
    origin taken over)."""
    report = SourceReport(source.key, source.upstream, source.local, dry_run,
                          started_at=time.time())
    primary = None if dry_run else await registry.replica.read_only()
    if primary is not None:  # its tags are its primary's, mirrored ones included
        report.status = "replica"
        report.error = (f"this registry is a read-only replica of {primary}: its mirrored "
                        "tags come from there (dockyard promote first)")
        report.finished_at = time.time()
        return report
    try:
        if dry_run:
            await _attempts(registry, source, report, prune, hints, sleep, configured)
        else:
            async with registry.leases.hold(f"mirror:{source.key}"):
                await _attempts(registry, source, report, prune, hints, sleep, configured)
    except LeaseBusy:
        report.status, report.error = "busy", "another process is syncing it now"
    report.finished_at = time.time()
    if not dry_run and report.status != "busy":
        await registry.mirrors.add_run(MirrorRun(
            source.key, report.started_at, report.finished_at, report.status,
            json.dumps(report.as_dict(REPORT_NAMES))), RUNS_KEPT)
    return report


async def _attempts(registry: Registry, source: MirrorSource, report: SourceReport,
                    prune: bool | None, hints: MountHints | None, sleep: Sleep,
                    configured: Sequence[MirrorSource]) -> None:
    delay = first = source.retry_backoff.total_seconds()
    before: dict[str, str | None] = {}  # each tag's local digest before the first attempt
    for attempt in range(source.retries + 1):
        report.attempts = attempt + 1
        report.error = None
        try:
            await _pass(registry, source, report, prune, hints or MountHints(), before,
                        configured)
        except SourceFailed as exc:
            report.status, report.error = "failed", str(exc)
        except Exception as exc:  # a bug or the local stores: said, the others go on
            log.exception("sync %s failed", source.key)
            report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
        if report.status == "ok":
            return
        if attempt < source.retries:
            log.warning("sync %s: attempt %d failed (%s); again in %.0f s", source.key,
                        attempt + 1, report.error or f"{len(report.failed)} tag(s) failed",
                        delay)
            await sleep(delay)
            # doubling, but never past the schedule: the next run would try by then (and
            # the source's lease is held meanwhile)
            delay = min(delay * 2, max(source.schedule.total_seconds(), first))


async def _pass(registry: Registry, source: MirrorSource, report: SourceReport,
                prune: bool | None, hints: MountHints, before: dict[str, str | None],
                configured: Sequence[MirrorSource] = ()) -> None:
    """One attempt. The report says what changed since before the first attempt (a tag
    added by the first is still "added" when the second finds it there)."""
    for kept in (report.added, report.updated, report.unchanged):
        kept.clear()
    report.failed.clear()
    report.warnings.clear()
    report.status = "ok"
    ref = RegistryRef(source.registry, source.upstream_repository)
    local = LocalRepository(registry, source.local)
    options = CopyOptions(platforms=tuple(Platform.parse(p) for p in source.platforms),
                          referrers=source.referrers, dry_run=report.dry_run)
    try:
        async with open_end(ref, access_for(source, registry.manifests.max_size)) as upstream:
            try:
                tags = await upstream.tags()
            except END_ERRORS as exc:
                raise SourceFailed(f"upstream {source.upstream}: listing tags: "
                                   f"{_one_line(exc)}") from exc
            report.upstream_tags = len(tags)
            if odd := invalid_tags(tags):
                report.warnings.append(left_out(odd))
            chosen = select_tags(source, tags)
            siblings = Siblings(source, configured, tags)
            copier = Copier(upstream, local, options, _LogProgress(source.key), hints)
            try:
                await _copy_tags(registry, source, report, copier, chosen, before, siblings)
            finally:
                await copier.close()
            report.copy = copier.summary.as_dict()
    except END_ERRORS as exc:
        raise SourceFailed(f"upstream {source.upstream}: {_one_line(exc)}") from exc
    pruning = source.prune if prune is None else prune
    if pruning and not tags and await registry.mirrors.origins(repository=source.local,
                                                               source=source.key):
        # an upstream answering an empty list (a registry mid-restore, a wrong
        # repository behind the same name) would otherwise take every mirrored tag
        report.warnings.append("the upstream lists no tags at all: nothing pruned")
        log.warning("%s: the upstream lists no tags at all; not pruning", source.key)
    elif pruning:
        await _prune(registry, source, report, local, set(chosen), siblings)
    if report.failed:
        copied = report.added or report.updated or report.unchanged or report.pruned
        report.status = "partial" if copied else "failed"
        if not copied:
            report.error = f"every tag failed: {next(iter(report.failed.values()))}"


async def _copy_tags(registry: Registry, source: MirrorSource, report: SourceReport,
                     copier: Copier, chosen: Sequence[str], before: dict[str, str | None],
                     siblings: Siblings) -> None:
    origins = {o.tag: o for o in await registry.mirrors.origins(repository=source.local)}
    gate = asyncio.Semaphore(TAGS_AT_ONCE)
    local = copier.destination

    async def one(tag: str) -> None:
        async with gate:
            try:
                if tag not in before:
                    before[tag] = await local.manifest_digest(tag)
                digest = await copier.copy(tag, tag)
            except (CopyError, RegistryError) as exc:
                report.failed[tag] = _one_line(exc)
                return
            if before[tag] is None:
                report.added.append(tag)
            elif before[tag] == digest:
                report.unchanged.append(tag)
            else:
                report.updated.append(tag)
            known = origins.get(tag)
            # the same content, recorded as another source's that still selects it:
            # theirs it stays (else its prune would never see it, ours would take it)
            theirs = (known is not None and known.digest == digest
                      and siblings.owner_selects(known.source, tag))
            if not report.dry_run and not theirs and (
                    known is None or known.digest != digest or known.source != source.key):
                await registry.mirrors.set_origin(TagOrigin(
                    source.local, tag, source.key, f"{source.upstream}:{tag}", digest,
                    time.time()))

    await asyncio.gather(*(one(t) for t in chosen))
    for kept in (report.added, report.updated, report.unchanged):
        kept.sort()


async def _prune(registry: Registry, source: MirrorSource, report: SourceReport,
                 local: LocalRepository, chosen: set[str], siblings: Siblings) -> None:
    """Remove the tags this source mirrored that it keeps no longer (gone upstream, or no
    longer selected); tags it did not mirror are never touched, nor a mirrored tag pushed
    over since (it names other content: its origin is dropped, the tag kept), nor one
    another source into the same repository selects (its origin is handed to that one,
    whose own prune decides)."""
    mirrored = {o.tag for o in await registry.mirrors.origins(
        repository=source.local, source=source.key, current=True)}
    for origin in await registry.mirrors.origins(repository=source.local,
                                                 source=source.key):
        if origin.tag in chosen:
            continue
        keepers = siblings.keeping(origin.tag)
        if keepers and origin.tag in mirrored:
            if not report.dry_run:
                keeper = keepers[0]
                await registry.mirrors.set_origin(TagOrigin(
                    source.local, origin.tag, keeper.key, f"{keeper.upstream}:{origin.tag}",
                    origin.digest, time.time()))
            continue
        removed = origin.tag in mirrored
        if removed and not report.dry_run:
            try:
                removed = await local.delete_tag(origin.tag, origin.digest)
            except RegistryError as exc:
                report.failed[origin.tag] = f"prune: {exc.message}"
                continue
        if not report.dry_run:
            await registry.mirrors.drop_origin(source.local, origin.tag)
        if removed and origin.tag not in report.pruned:
            report.pruned.append(origin.tag)  # kept across attempts: gone is gone
    report.pruned.sort()


async def sync_sources(registry: Registry, sources: Sequence[MirrorSource], *,
                       dry_run: bool = False, prune: bool | None = None,
                       sleep: Sleep = asyncio.sleep,
                       configured: Sequence[MirrorSource] | None = None
                       ) -> list[SourceReport]:
    """Sync every source (`SOURCES_AT_ONCE` at a time), each on its own; the reports in
    the same order. `configured`: all the configured sources (default: `sources`)."""
    every = list(sources if configured is None else configured)
    hints = MountHints()
    gate = asyncio.Semaphore(SOURCES_AT_ONCE)

    async def one(source: MirrorSource) -> SourceReport:
        async with gate:
            return await sync_source(registry, source, dry_run=dry_run, prune=prune,
                                     hints=hints, sleep=sleep, configured=every)

    return list(await asyncio.gather(*(one(s) for s in sources)))


def _one_line(exc: BaseException) -> str:
    """A registry error's own message, else the copy engine's one line of `exc`."""
    return exc.message if isinstance(exc, RegistryError) else one_line(exc)
