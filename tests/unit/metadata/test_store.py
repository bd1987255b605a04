"""MetadataStore over a real SQLite file: blobs, uploads, manifests, tags, referrers, catalog."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.dialects import sqlite

from dockyard.metadata.engine import migrate, open_engines
from dockyard.metadata.integrity import IntegrityStore
from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.records import Claim, NewManifest
from dockyard.metadata.schema import manifests
from dockyard.metadata.store import MetadataStore, MissingReferences, SessionLimit
from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest


def dg(text: str) -> str:
    return str(Digest.of(text.encode()))


def manifest(
    payload: str,
    *,
    blobs: tuple[str, ...] = (),
    children: tuple[str, ...] = (),
    subject: str | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
    media_type: str = mt.OCI_MANIFEST,
) -> NewManifest:
    body = payload.encode()
    return NewManifest(
        digest=str(Digest.of(body)),
        media_type=media_type,
        payload=body,
        artifact_type=artifact_type,
        subject_digest=subject,
        config_digest=blobs[0] if blobs else None,
        annotations=json.dumps(annotations) if annotations else None,
        blob_digests=blobs,
        child_digests=children,
    )


CONFIG, LAYER = dg("config"), dg("layer")


async def image(store: MetadataStore, repo: str, payload: str, tag: str | None = None,
                **kw: object) -> NewManifest:
    await store.link_blob(repo, CONFIG, 2)
    await store.link_blob(repo, LAYER, 100)
    new = manifest(payload, blobs=(CONFIG, LAYER), **kw)  # type: ignore[arg-type]
    await store.put_manifest(repo, new, tag)
    return new


# --- blobs -------------------------------------------------------------------

async def test_link_blob_creates_repository(store: MetadataStore) -> None:
    assert not await store.repository_exists("a/b")
    await store.link_blob("a/b", CONFIG, 2)
    assert await store.repository_exists("a/b")
    found = await store.blob_in_repository("a/b", CONFIG)
    assert found is not None
    assert (found.digest, found.size) == (CONFIG, 2)
    assert found.touched_at == pytest.approx(time.time(), abs=5)
    assert await store.blob_in_repository("other", CONFIG) is None
    assert await store.blob_in_repository("a/b", LAYER) is None


async def test_link_blob_is_idempotent_and_shared(store: MetadataStore) -> None:
    await store.link_blob("r1", CONFIG, 2)
    await store.link_blob("r1", CONFIG, 2)
    await store.link_blob("r2", CONFIG, 2)
    counts = await store.counts()
    assert counts["blobs"] == 1
    assert counts["repositories"] == 2
    assert await store.blob_in_repository("r2", CONFIG) is not None


async def test_link_blob_touches(store: MetadataStore) -> None:
    await store.link_blob("r", CONFIG, 2)
    first = await store.blob(CONFIG)
    assert first is not None
    await asyncio.sleep(0.01)
    await store.link_blob("r", CONFIG, 2)
    second = await store.blob(CONFIG)
    assert second is not None
    assert second.touched_at > first.touched_at


async def test_touch_blob(store: MetadataStore) -> None:
    await store.link_blob("r", CONFIG, 2)
    before = await store.blob(CONFIG)
    assert before is not None
    await asyncio.sleep(0.01)
    await store.touch_blob(CONFIG)
    after = await store.blob(CONFIG)
    assert after is not None
    assert after.touched_at > before.touched_at


async def test_mount_blob(store: MetadataStore) -> None:
    await store.link_blob("src", LAYER, 100)
    mounted = await store.mount_blob("dst", LAYER, "src")
    assert mounted is not None
    assert (mounted.digest, mounted.size) == (LAYER, 100)
    found = await store.blob_in_repository("dst", LAYER)
    assert found is not None
    assert found.size == 100


async def test_mount_from_repository_without_blob(store: MetadataStore) -> None:
    await store.link_blob("elsewhere", LAYER, 100)  # stored, but not in `src`
    await store.link_blob("src", CONFIG, 2)
    assert await store.mount_blob("dst", LAYER, "src") is None
    assert await store.mount_blob("dst", LAYER, "nosuchrepo") is None
    assert await store.blob_in_repository("dst", LAYER) is None
    assert not await store.repository_exists("dst")


async def check_a_mark_goes_only_with_the_link_of_its_claim(store: MetadataStore) -> None:
    """fsck's corrupt mark and a push of the blob again: the claim keeps the mark (the
    stored bytes are still the damaged ones, so a push that fails after its claim leaves
    the blob marked); the link after the publish of verified bytes clears the mark its
    claim found, never one fsck set after the claim (its deletion may have removed the
    bytes just published). A plain function: `tests/e2e/test_postgres.py` runs it too."""
    integrity, digest = IntegrityStore(store), str(Digest.of(os.urandom(16)))

    async def mark() -> None:
        await asyncio.sleep(0.001)  # each mark its own time
        assert await integrity.begin_mark(digest)
        await integrity.end_mark(digest)

    await store.link_blob("marks/a", digest, 6)
    await mark()
    claim = await store.claim_blob(digest, 6)
    assert claim is not None
    assert claim.mark is not None
    assert await store.blob(digest) is None  # claimed, nothing published yet: marked
    assert await store.blob_in_repository("marks/a", digest) is None
    # that push failed; the next one claims, publishes and links
    again = await store.claim_blob(digest, 6)
    assert again == claim
    await store.link_blob("marks/a", digest, 6, claim=again)
    assert await store.blob(digest) is not None
    assert await store.blob_in_repository("marks/a", digest) is not None
    # fsck marks the blob between a claim and its link: the mark stays...
    claim = await store.claim_blob(digest, 6)
    assert claim == Claim(None)
    await mark()
    await store.link_blob("marks/a", digest, 6, claim=claim)
    assert await store.blob(digest) is None
    # ...as it does when the claim found an earlier mark
    claim = await store.claim_blob(digest, 6)
    assert claim is not None
    assert claim.mark is not None
    await mark()
    await store.link_blob("marks/a", digest, 6, claim=claim)
    assert await store.blob(digest) is None
    # a small PUT's claim, taken with the session's hold, keeps it as well
    session = f"marks-{digest[-12:]}"
    await store.create_upload(session, "marks/a")
    record, claim = await store.hold_upload_claiming(session, "marks/a", "h", 30, digest, 6)
    assert record is not None
    assert claim is not None
    assert claim.mark is not None
    assert await store.blob(digest) is None
    await store.link_blob("marks/a", digest, 6, upload=session, claim=claim)
    assert await store.blob(digest) is not None


async def test_a_mark_goes_only_with_the_link_of_its_claim(store: MetadataStore) -> None:
    await check_a_mark_goes_only_with_the_link_of_its_claim(store)


async def check_a_link_after_the_collector_took_the_claimed_blob(store: MetadataStore
                                                                  ) -> None:
    """The collector deletes a claimed blob's row (a grace shorter than the push's claim
    to link): the link says so and writes nothing (the session stays, no repository
    link), where it raised the foreign key violation. A plain function:
    `tests/e2e/test_postgres.py` runs it too."""
    life, digest = LifecycleStore(store), str(Digest.of(os.urandom(16)))
    session = f"gone-{digest[-12:]}"
    await store.create_upload(session, "gone/a")
    claim = await store.claim_blob(digest, 6)
    assert claim is not None
    assert await life.begin_blob_deletion(digest, time.time() + 10) == 6
    await life.end_blob_deletion(digest)
    assert not await store.link_blob("gone/a", digest, 6, upload=session, claim=claim)
    assert await store.blob_in_repository("gone/a", digest) is None
    assert await store.upload(session) is not None
    # claimed again, it links
    claim = await store.claim_blob(digest, 6)
    assert claim is not None
    assert await store.link_blob("gone/a", digest, 6, upload=session, claim=claim)
    assert await store.blob_in_repository("gone/a", digest) is not None
    assert await store.upload(session) is None


async def test_a_link_after_the_collector_took_the_claimed_blob(store: MetadataStore
                                                                ) -> None:
    await check_a_link_after_the_collector_took_the_claimed_blob(store)


async def check_one_push_takes_the_repair(store: MetadataStore) -> None:
    """Two pushes of a marked blob at once both claim it with the same mark; only one
    takes the repair (it alone removes the stored bytes, before its publish; the other,
    removing them after that publish, left the blob linked without bytes). The
    repairer's link clears its mark; the other's link leaves the blob to it. A plain
    function: `tests/e2e/test_postgres.py` runs it too."""
    integrity, digest = IntegrityStore(store), str(Digest.of(os.urandom(16)))
    await store.link_blob("repair/a", digest, 6)
    assert await integrity.begin_mark(digest)
    await integrity.end_mark(digest)
    first, second = await store.claim_blob(digest, 6), await store.claim_blob(digest, 6)
    assert first is not None
    assert second is not None
    assert first.mark is not None
    assert first == second
    taken = await asyncio.gather(store.take_mark(digest, first.mark),
                                 store.take_mark(digest, second.mark))
    winners = [t for t in taken if t is not None]
    assert len(winners) == 1
    assert winners[0].mark is not None
    assert winners[0].mark > first.mark
    # the other push links first (its claim no longer holds a mark): still marked
    await store.link_blob("repair/b", digest, 6, claim=Claim(None))
    assert await store.blob(digest) is None
    await store.link_blob("repair/a", digest, 6, claim=winners[0])
    assert await store.blob(digest) is not None
    assert await store.blob_in_repository("repair/b", digest) is not None
    assert await store.take_mark(digest, winners[0].mark) is None  # nothing left to take


async def test_one_push_takes_the_repair(store: MetadataStore) -> None:
    await check_one_push_takes_the_repair(store)


async def test_unlink_blob(store: MetadataStore) -> None:
    await store.link_blob("r1", LAYER, 100)
    await store.link_blob("r2", LAYER, 100)
    assert await store.unlink_blob("r1", LAYER)
    assert await store.blob_in_repository("r1", LAYER) is None
    assert await store.blob_in_repository("r2", LAYER) is not None
    assert await store.blob(LAYER) is not None  # the bytes stay for the collector
    assert not await store.unlink_blob("r1", LAYER)
    assert not await store.unlink_blob("nosuchrepo", LAYER)


# --- uploads -----------------------------------------------------------------

async def test_upload_lifecycle(store: MetadataStore) -> None:
    created = await store.create_upload("u1", "repo")
    assert (created.id, created.repository, created.offset) == ("u1", "repo", 0)
    got = await store.upload("u1")
    assert got is not None
    assert (got.repository, got.offset) == ("repo", 0)
    assert await store.upload("u2") is None
    assert await store.upload_ids() == {"u1"}
    assert await store.delete_upload("u1")
    assert await store.upload("u1") is None
    assert not await store.delete_upload("u1")


async def test_upload_offset_compare_and_set(store: MetadataStore) -> None:
    await store.create_upload("u1", "repo")
    assert await store.advance_upload("u1", 0, 100)
    assert not await store.advance_upload("u1", 0, 50)  # another write won
    got = await store.upload("u1")
    assert got is not None
    assert got.offset == 100
    assert await store.advance_upload("u1", 100, 250)
    assert not await store.advance_upload("u1", 100, 300)
    got = await store.upload("u1")
    assert got is not None
    assert got.offset == 250
    assert got.updated_at >= got.started_at
    assert not await store.advance_upload("missing", 0, 1)


async def test_large_offsets(store: MetadataStore) -> None:
    await store.create_upload("u1", "repo")
    big = 5 * 1024**3
    assert await store.advance_upload("u1", 0, big)
    got = await store.upload("u1")
    assert got is not None
    assert got.offset == big


async def test_stale_uploads(store: MetadataStore) -> None:
    await store.create_upload("old", "repo")
    cutoff = time.time() + 0.001
    await asyncio.sleep(0.01)
    await store.create_upload("new", "repo")
    assert await store.stale_uploads(cutoff) == ["old"]
    assert not await store.delete_stale_upload("new", cutoff)
    assert await store.delete_stale_upload("old", cutoff)
    assert await store.upload_ids() == {"new"}


async def test_open_sessions_capped_per_owner_and_in_total(store: MetadataStore) -> None:
    caps = {"max_total": 5, "max_per_owner": 2}
    await store.create_upload("a1", "repo", "user:a", **caps)
    await store.create_upload("a2", "other", "user:a", **caps)
    with pytest.raises(SessionLimit) as info:
        await store.create_upload("a3", "repo", "user:a", **caps)
    assert (info.value.which, info.value.limit) == ("owner", 2)
    await store.create_upload("b1", "repo", "user:b", **caps)  # another owner still can
    assert await store.delete_upload("a1")  # a finished or cancelled session frees its slot
    await store.create_upload("a3", "repo", "user:a", **caps)
    await store.create_upload("legacy", "repo")  # no owner (older rows): counted in total
    await store.create_upload("b2", "repo", "user:b", **caps)
    with pytest.raises(SessionLimit) as info:
        await store.create_upload("c1", "repo", "user:c", **caps)
    assert (info.value.which, info.value.limit) == ("total", 5)
    assert await store.upload_ids() == {"a2", "a3", "b1", "b2", "legacy"}
    await store.create_upload("c1", "repo", "user:c")  # no caps given: none applies


async def test_session_cap_holds_when_processes_race(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    engines_a = open_engines(url)
    await migrate(engines_a)
    a, b = MetadataStore(engines_a), MetadataStore(open_engines(url))

    async def open_one(store: MetadataStore, i: int) -> bool:
        try:
            await store.create_upload(f"u{i}", "repo", "user:x", max_total=100,
                                      max_per_owner=7)
        except SessionLimit:
            return False
        return True

    try:
        won = await asyncio.gather(*(open_one(a if i % 2 else b, i) for i in range(40)))
        assert sum(won) == 7
        assert len(await a.upload_ids()) == 7
    finally:
        await a.close()
        await b.close()


async def test_advanced_upload_is_not_stale(store: MetadataStore) -> None:
    await store.create_upload("u", "repo")
    cutoff = time.time() + 0.001
    await asyncio.sleep(0.01)
    await store.advance_upload("u", 0, 10)  # a PATCH just arrived
    assert not await store.delete_stale_upload("u", cutoff)


async def test_upload_holds(store: MetadataStore) -> None:
    """One holder at a time; the hold reads the session; released by the holder's
    offset write, by `release_upload`, or when it expires; a dead holder's is taken."""
    await store.create_upload("u", "repo")
    held = await store.hold_upload("u", "repo", "a", 30)
    assert held is not None
    assert (held.id, held.repository, held.offset) == ("u", "repo", 0)
    assert await store.hold_upload("u", "repo", "b", 30) is None
    assert await store.hold_upload("u", "repo", "a", 30) is None  # not re-entrant
    assert await store.hold_upload("u", "other", "c", 30) is None  # not that repository's
    assert await store.hold_upload("missing", "repo", "c", 30) is None
    assert (await store.upload_holder("u") or (None, None))[1] == "a"
    assert not await store.advance_upload("u", 0, 10, holder="b")  # only the holder writes
    assert await store.renew_upload("u", "a", 30)
    assert not await store.renew_upload("u", "b", 30)
    assert await store.advance_upload("u", 0, 10, holder="a")
    assert not await store.renew_upload("u", "a", 30)  # the offset write released it
    held = await store.hold_upload("u", "repo", "b", 0.2)
    assert held is not None
    assert held.offset == 10
    await store.release_upload("u", "a")  # not a's: nothing happens
    assert await store.hold_upload("u", "repo", "c", 30) is None
    await asyncio.sleep(0.25)  # b's hold expired
    assert (await store.upload_holder("u") or (None, "?"))[1] is None
    assert await store.hold_upload("u", "repo", "c", 30) is not None
    assert await store.hold_upload("u", "repo", "d", 30, gone="x") is None
    assert await store.hold_upload("u", "repo", "d", 30, gone="c") is not None
    await store.release_upload("u", "d")
    assert await store.hold_upload("u", "repo", "e", 30) is not None


async def test_held_upload_is_not_stale(store: MetadataStore) -> None:
    await store.create_upload("u", "repo", holder="a", ttl=0.3)
    await store.create_upload("v", "repo")
    cutoff = time.time() + 0.001
    await asyncio.sleep(0.01)
    assert await store.stale_uploads(cutoff) == ["v"]
    assert not await store.delete_stale_upload("u", cutoff)  # a body is streaming into it
    assert await store.hold_upload("u", "repo", "b", 30) is None  # born held
    await asyncio.sleep(0.3)
    assert sorted(await store.stale_uploads(cutoff)) == ["u", "v"]
    assert await store.delete_stale_upload("u", cutoff)


# --- manifests ---------------------------------------------------------------

async def test_put_and_get_manifest(store: MetadataStore) -> None:
    new = await image(store, "repo", '{"m": 1}', "latest")
    by_tag = await store.manifest("repo", tag="latest")
    by_digest = await store.manifest("repo", digest=new.digest)
    assert by_tag == by_digest
    assert by_tag is not None
    assert by_tag.digest == new.digest
    assert by_tag.media_type == mt.OCI_MANIFEST
    assert by_tag.payload == b'{"m": 1}'
    assert by_tag.size == len(b'{"m": 1}')
    head = await store.manifest("repo", digest=new.digest, payload=False)
    assert head is not None
    assert head.payload is None
    assert head.size == by_tag.size
    assert await store.manifest("other", tag="latest") is None
    assert await store.manifest("repo", tag="nope") is None
    assert await store.manifest("repo", digest=dg("nope")) is None


async def test_put_manifest_missing_blobs(store: MetadataStore) -> None:
    await store.link_blob("repo", CONFIG, 2)
    new = manifest("m", blobs=(CONFIG, LAYER))
    with pytest.raises(MissingReferences) as info:
        await store.put_manifest("repo", new, "latest")
    assert info.value.missing == [LAYER]
    assert await store.manifest("repo", digest=new.digest) is None
    assert await store.list_tags("repo", None, None) == []


async def test_blob_in_another_repository_is_missing(store: MetadataStore) -> None:
    await store.link_blob("other", CONFIG, 2)
    with pytest.raises(MissingReferences) as info:
        await store.put_manifest("repo", manifest("m", blobs=(CONFIG,)), None)
    assert info.value.missing == [CONFIG]
    assert not await store.repository_exists("repo")  # nothing written


async def test_index_needs_its_children(store: MetadataStore) -> None:
    child = await image(store, "repo", "child")
    missing_child = dg("absent child")
    index = manifest("index", children=(child.digest, missing_child), media_type=mt.OCI_INDEX)
    with pytest.raises(MissingReferences) as info:
        await store.put_manifest("repo", index, "multi")
    assert info.value.missing == [missing_child]
    ok = manifest("index", children=(child.digest,), media_type=mt.OCI_INDEX)
    await store.put_manifest("repo", ok, "multi")
    got = await store.manifest("repo", tag="multi")
    assert got is not None
    assert got.media_type == mt.OCI_INDEX


async def test_child_in_another_repository_is_missing(store: MetadataStore) -> None:
    child = await image(store, "elsewhere", "child")
    with pytest.raises(MissingReferences):
        await store.put_manifest(
            "repo", manifest("i", children=(child.digest,), media_type=mt.OCI_INDEX), None)


async def test_missing_lists_every_reference(store: MetadataStore) -> None:
    b1, b2, c1 = dg("b1"), dg("b2"), dg("c1")
    with pytest.raises(MissingReferences) as info:
        await store.put_manifest("repo", manifest("x", blobs=(b1, b2), children=(c1,)), None)
    assert set(info.value.missing) == {b1, b2, c1}


async def test_put_same_manifest_twice(store: MetadataStore) -> None:
    new = await image(store, "repo", "same", "a")
    await store.put_manifest("repo", new, "b")
    await store.put_manifest("repo", new, None)
    assert (await store.counts())["manifests"] == 1
    assert await store.list_tags("repo", None, None) == ["a", "b"]


async def test_same_manifest_in_two_repositories(store: MetadataStore) -> None:
    new = await image(store, "r1", "shared", "t")
    await image(store, "r2", "shared", "t")
    assert (await store.counts())["manifests"] == 2
    assert await store.delete_manifest("r1", new.digest)
    assert await store.manifest("r2", tag="t") is not None


async def test_tag_moves_to_new_manifest(store: MetadataStore) -> None:
    first = await image(store, "repo", "one", "latest")
    second = await image(store, "repo", "two", "latest")
    got = await store.manifest("repo", tag="latest")
    assert got is not None
    assert got.digest == second.digest
    assert await store.manifest("repo", digest=first.digest) is not None  # untagged, kept
    assert await store.list_tags("repo", None, None) == ["latest"]


async def test_delete_manifest_removes_its_tags(store: MetadataStore) -> None:
    doomed = await image(store, "repo", "doomed", "a")
    await store.put_manifest("repo", doomed, "b")
    await image(store, "repo", "kept", "c")
    assert await store.delete_manifest("repo", doomed.digest)
    assert await store.manifest("repo", digest=doomed.digest) is None
    assert await store.manifest("repo", tag="a") is None
    assert await store.list_tags("repo", None, None) == ["c"]
    assert not await store.delete_manifest("repo", doomed.digest)
    assert not await store.delete_manifest("nosuchrepo", doomed.digest)
    # the blobs themselves stay (the collector decides)
    assert await store.blob_in_repository("repo", LAYER) is not None


async def test_delete_tag(store: MetadataStore) -> None:
    new = await image(store, "repo", "m", "a")
    await store.put_manifest("repo", new, "b")
    assert await store.delete_tag("repo", "a")
    assert not await store.delete_tag("repo", "a")
    assert not await store.delete_tag("nosuchrepo", "a")
    assert await store.list_tags("repo", None, None) == ["b"]
    assert await store.manifest("repo", digest=new.digest) is not None


# --- tags listing ------------------------------------------------------------

async def test_list_tags_lexical_order_and_pagination(store: MetadataStore) -> None:
    new = await image(store, "repo", "m")
    names = ["v2", "v10", "latest", "B", "a", "Z", "1.0", "_x", "v1"]
    for name in names:
        await store.put_manifest("repo", new, name)
    expected = sorted(names)  # byte order: digits < upper < '_' < lower
    assert expected == ["1.0", "B", "Z", "_x", "a", "latest", "v1", "v10", "v2"]
    assert await store.list_tags("repo", None, None) == expected
    assert await store.list_tags("repo", 3, None) == expected[:3]
    assert await store.list_tags("repo", 3, "Z") == ["_x", "a", "latest"]
    assert await store.list_tags("repo", None, "v1") == ["v10", "v2"]
    assert await store.list_tags("repo", 100, "v2") == []
    assert await store.list_tags("repo", 0, None) == []
    # a `last` that is not itself a tag still positions the page
    assert await store.list_tags("repo", 2, "b") == ["latest", "v1"]


async def test_paging_through_all_tags(store: MetadataStore) -> None:
    new = await image(store, "repo", "m")
    names = {f"t{i:03d}" for i in range(25)}
    for name in names:
        await store.put_manifest("repo", new, name)
    seen: list[str] = []
    last = None
    while page := await store.list_tags("repo", 7, last):
        seen += page
        last = page[-1]
    assert seen == sorted(names)


async def test_list_tags_unknown_repository(store: MetadataStore) -> None:
    assert await store.list_tags("nosuchrepo", None, None) is None
    await store.link_blob("blobsonly", CONFIG, 2)
    assert await store.list_tags("blobsonly", None, None) == []


# --- referrers ---------------------------------------------------------------

async def test_referrers(store: MetadataStore) -> None:
    subject = await image(store, "repo", "subject", "latest")
    sig = await image(store, "repo", "sig", subject=subject.digest,
                      artifact_type="application/vnd.example.sig",
                      annotations={"created": "now"})
    sbom = await image(store, "repo", "sbom", subject=subject.digest,
                       artifact_type="application/spdx+json")
    await image(store, "repo", "unrelated", artifact_type="application/vnd.example.sig")
    await image(store, "other", "sig-elsewhere", subject=subject.digest,
                artifact_type="application/vnd.example.sig")

    found = await store.referrers("repo", subject.digest, None)
    assert [r.digest for r in found] == [sig.digest, sbom.digest]
    assert found[0].artifact_type == "application/vnd.example.sig"
    assert found[0].annotations == {"created": "now"}
    assert found[0].media_type == mt.OCI_MANIFEST
    assert found[0].size == len(b"sig")
    assert found[1].annotations is None

    filtered = await store.referrers("repo", subject.digest, "application/spdx+json")
    assert [r.digest for r in filtered] == [sbom.digest]
    assert await store.referrers("repo", subject.digest, "application/none") == []


async def test_referrers_of_absent_subject(store: MetadataStore) -> None:
    absent = dg("never pushed")
    ref = await image(store, "repo", "ref", subject=absent, artifact_type="a/b")
    assert [r.digest for r in await store.referrers("repo", absent, None)] == [ref.digest]
    assert await store.referrers("nosuchrepo", absent, None) == []


async def test_deleted_referrer_disappears(store: MetadataStore) -> None:
    subject = await image(store, "repo", "subject")
    ref = await image(store, "repo", "ref", subject=subject.digest, artifact_type="a/b")
    await store.delete_manifest("repo", ref.digest)
    assert await store.referrers("repo", subject.digest, None) == []


async def check_referrers_come_in_pages(store: MetadataStore) -> None:
    """A subject's referrers a page at a time: each page at most its size, each past the
    last one's position, together every referrer once in the unpaged order, filtered by
    artifact type across pages too; referrers pushed at the same instant are ordered by
    id. A plain function: `tests/e2e/test_postgres.py` runs it too."""
    repo = f"pages/r{os.urandom(4).hex()}"
    subject = (await image(store, repo, f"subject {repo}")).digest
    types = ("application/vnd.example.sig", "application/spdx+json")
    pushed = [(await image(store, repo, f"ref {i} {repo}", subject=subject,
                           artifact_type=types[i % 2])).digest for i in range(11)]
    await image(store, repo, f"unrelated {repo}", artifact_type=types[0])
    await image(store, f"{repo}-other", f"elsewhere {repo}", subject=subject,
                artifact_type=types[0])
    # six of them at one instant: only the id orders those
    same = pushed[2:8]
    await store.engines.transaction(lambda conn: conn.execute(
        update(manifests).where(manifests.c.digest.in_(same)).values(created_at=1e9)))

    async def pages(artifact_type: str | None, size: int) -> list[list[str]]:
        out: list[list[str]] = []
        after = None
        while True:
            page = await store.referrers(repo, subject, artifact_type, limit=size,
                                         after=after)
            assert len(page) <= size
            if not page:
                return out
            out.append([r.digest for r in page])
            after = page[-1].position

    whole = [r.digest for r in await store.referrers(repo, subject, None)]
    assert sorted(whole) == sorted(pushed)
    assert whole[:6] == same  # the oldest now, in the order they were pushed (by id)
    for size in (1, 3, 4, 11, 12):
        found = await pages(None, size)
        assert [d for page in found for d in page] == whole, size
        assert all(len(page) == size for page in found[:-1])
    for kind in types:
        filtered = [r.digest for r in await store.referrers(repo, subject, kind)]
        assert filtered == [d for d in whole if types[pushed.index(d) % 2] == kind]
        assert [d for page in await pages(kind, 2) for d in page] == filtered
    # a position no referrer holds still places the page
    assert [r.digest for r in await store.referrers(repo, subject, None,
                                                   after=(1e9, 2**31 - 1))] == whole[6:]
    assert await store.referrers(repo, subject, None, after=(-1.0, 0), limit=2) == \
        (await store.referrers(repo, subject, None))[:2]


async def test_referrers_come_in_pages(store: MetadataStore) -> None:
    await check_referrers_come_in_pages(store)


async def test_a_page_of_referrers_is_one_range_of_an_index(store: MetadataStore) -> None:
    """SQLite answers a page from an index in the referrers' order (filtered by type or
    not): a search that starts at the cursor, no sort of every referrer of the subject."""
    statements: list[Any] = []

    async def read(stmt: Any, params: Any = None) -> list[Any]:
        statements.append(stmt)
        return []

    store._read = read  # type: ignore[method-assign]
    await store.referrers("repo", dg("subject"), None, limit=10, after=(1.5, 7))
    await store.referrers("repo", dg("subject"), "a/b", limit=10, after=(1.5, 7))
    assert store.engines.sqlite is not None
    with store.engines.sqlite.connect() as conn:
        for stmt, index in zip(statements, (
                "ix_manifests_referrers (repository_id=? AND subject_digest=? AND "
                "created_at>?)",
                "ix_manifests_referrers_by_type (repository_id=? AND subject_digest=? AND "
                "artifact_type=? AND created_at>?)"), strict=True):
            sql = str(stmt.compile(dialect=sqlite.dialect(),
                                   compile_kwargs={"literal_binds": True}))
            plan = " / ".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql))
            assert f"USING INDEX {index}" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


# --- catalog -----------------------------------------------------------------

async def test_catalog_order_and_pagination(store: MetadataStore) -> None:
    names = ["b", "a/z", "a", "a-b", "c/d/e", "a.b", "0"]
    for name in names:
        await store.link_blob(name, CONFIG, 2)
    expected = sorted(names)
    assert await store.catalog(None, None) == expected
    assert await store.catalog(2, None) == expected[:2]
    assert await store.catalog(2, expected[1]) == expected[2:4]
    assert await store.catalog(None, expected[-1]) == []
    seen: list[str] = []
    last = None
    while page := await store.catalog(3, last):
        seen += page
        last = page[-1]
    assert seen == expected


async def test_empty_catalog(store: MetadataStore) -> None:
    assert await store.catalog(None, None) == []
    assert await store.catalog(10, "a") == []


# --- the database file -------------------------------------------------------

async def test_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'metadata.db'}"
    engines = open_engines(url)
    await migrate(engines)
    first = MetadataStore(engines)
    await first.link_blob("repo", CONFIG, 2)
    await first.create_upload("u", "repo")
    await first.close()

    engines = open_engines(url)
    await migrate(engines)  # idempotent
    second = MetadataStore(engines)
    try:
        assert await second.blob_in_repository("repo", CONFIG) is not None
        assert await second.upload("u") is not None
        assert engines.dialect == "sqlite"
    finally:
        await second.close()


async def test_two_stores_share_one_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    engines_a = open_engines(url)
    await migrate(engines_a)
    a, b = MetadataStore(engines_a), MetadataStore(open_engines(url))
    try:
        await a.create_upload("u", "repo")
        assert await b.advance_upload("u", 0, 10)
        assert not await a.advance_upload("u", 0, 20)
        got = await a.upload("u")
        assert got is not None
        assert got.offset == 10
    finally:
        await a.close()
        await b.close()


async def test_database_path_with_uri_characters(tmp_path: Path) -> None:
    engines = open_engines(f"sqlite:///{tmp_path / 'data#1' / 'metadata.db'}")
    await migrate(engines)
    store = MetadataStore(engines)
    try:
        await store.link_blob("repo", CONFIG, 2)
        assert await store.blob_in_repository("repo", CONFIG) is not None
        assert await store.manifest("repo", tag="latest") is None
    finally:
        await store.close()


async def test_a_subject_delete_keeps_referrers_something_else_keeps(
        store: MetadataStore) -> None:
    # a referrer with its own tag (`sbom-v1`) or listed by another index stays, as an
    # index's children do; an untagged, unlisted one goes with its subject
    subject = await image(store, "repo", "subject", "v1")
    loose = await image(store, "repo", "loose-sig", subject=subject.digest,
                        artifact_type="a/sig")
    tagged = await image(store, "repo", "tagged-sbom", "sbom-v1", subject=subject.digest,
                         artifact_type="a/sbom")
    listed = await image(store, "repo", "listed-att", subject=subject.digest,
                         artifact_type="a/att")
    holder = manifest("holder", children=(listed.digest,), media_type=mt.OCI_INDEX)
    await store.put_manifest("repo", holder, "attestations")
    gone = await store.delete_manifest("repo", subject.digest)
    assert sorted(gone) == sorted([subject.digest, loose.digest])
    kept = await store.manifest("repo", tag="sbom-v1")
    assert kept is not None
    assert kept.digest == tagged.digest
    assert await store.manifest("repo", digest=listed.digest) is not None
    assert await store.manifest("repo", digest=loose.digest) is None
