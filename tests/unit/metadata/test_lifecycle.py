"""LifecycleStore over a real SQLite file: repository deletion, collector re-checks."""

from __future__ import annotations

import time

from sqlalchemy import insert, update

from dockyard.metadata.lifecycle import LifecycleStore
from dockyard.metadata.schema import blob_deletions
from dockyard.metadata.store import TOMBSTONE_TIMEOUT, MetadataStore
from dockyard.oci.digest import Digest

D1 = str(Digest.of(b"one"))
D2 = str(Digest.of(b"two"))


async def test_a_name_deleted_twice_is_deleted_twice(store: MetadataStore) -> None:
    life = LifecycleStore(store)
    for _ in range(2):  # the second deletion records the same (name, digest) again
        await store.link_blob("re/used", D1, 3)
        deleted = await life.delete_repository("re/used")
        assert deleted is not None
        assert deleted.blobs == 1
        assert await store.blob_in_repository("re/used", D1) is None
        assert await life.deleted_owner(D1) == "re/used"
    assert await life.delete_repository("re/used") is None
    assert "re/used" not in await store.catalog(None, None)


async def test_blob_deletion_rechecks_links_and_grace(store: MetadataStore) -> None:
    life = LifecycleStore(store)
    await store.link_blob("keep/it", D1, 3)
    await store.link_blob("drop/it", D2, 3)
    await life.delete_repository("drop/it")
    future = time.time() + 10
    assert await life.begin_blob_deletion(D1, future) is None  # still linked
    assert await life.begin_blob_deletion(D2, time.time() - 10) is None  # within grace
    assert await life.begin_blob_deletion(D2, future) == 3
    # an upload of the same digest must wait while the bytes go
    assert await store.claim_blob(D2, 3) is None
    await life.end_blob_deletion(D2)
    assert await store.claim_blob(D2, 3) is not None
    assert (await store.blob(D2)) is not None


async def test_hold_claiming_claims_only_an_empty_session_outside_a_deletion(
        store: MetadataStore) -> None:
    """A small PUT's one write: the hold, and the blob's claim when the session is empty
    and the collector is not deleting that digest (then the caller claims later)."""
    life = LifecycleStore(store)
    await store.link_blob("drop/it", D2, 3)
    await life.delete_repository("drop/it")
    assert await life.begin_blob_deletion(D2, time.time() + 10) == 3
    await store.create_upload("u", "r/x")
    record, claimed = await store.hold_upload_claiming("u", "r/x", "a", 30, D2, 3)
    assert record is not None
    assert not claimed  # the bytes are going: no claim, but the hold is taken
    assert await store.hold_upload("u", "r/x", "b", 30) is None
    await store.release_upload("u", "a")
    await life.end_blob_deletion(D2)
    record, claimed = await store.hold_upload_claiming("u", "r/x", "a", 30, D2, 3)
    assert record is not None
    assert claimed
    assert await store.blob(D2) is not None
    assert await store.advance_upload("u", 0, 3, holder="a")
    record, claimed = await store.hold_upload_claiming("u", "r/x", "c", 30, D1, 3)
    assert record is not None
    assert record.offset == 3
    assert not claimed  # bytes already stored: the PUT's digest covers more than its body
    assert await store.blob(D1) is None
    assert await store.hold_upload_claiming("u", "r/x", "d", 30, D1, 3) == (None, None)


async def test_dangling_link_survives_a_fresh_touch(store: MetadataStore) -> None:
    life = LifecycleStore(store)
    await store.link_blob("r/x", D1, 3)
    (repo_id, _), = await life.repositories()
    cutoff = time.time() + 10
    assert [d for d, _ in await life.dangling_links(repo_id, cutoff)] == [D1]
    await store.touch_blob(D1)  # a HEAD after the plan was made
    assert await life.delete_dangling_link(repo_id, D1, time.time() - 1) is False
    assert await life.delete_dangling_link(repo_id, D1, cutoff) is True


async def _age_tombstone(store: MetadataStore, digest: str, seconds: float) -> None:
    """Make a tombstone look as old as a collector that died `seconds` ago left it."""
    await store.engines.transaction(lambda conn: conn.execute(
        update(blob_deletions).where(blob_deletions.c.digest == digest)
        .values(started_at=time.time() - seconds)))


async def test_a_dead_collectors_deletion_is_taken_over(store: MetadataStore) -> None:
    life = LifecycleStore(store)
    await store.link_blob("drop/it", D1, 3)
    await life.delete_repository("drop/it")
    assert await life.begin_blob_deletion(D1, time.time() + 10) == 3
    older_than = time.time() - TOMBSTONE_TIMEOUT
    assert await life.stale_tombstones(older_than) == []  # fresh: a live collector's
    assert await life.resume_blob_deletion(D1, older_than) is False
    await _age_tombstone(store, D1, TOMBSTONE_TIMEOUT + 60)
    assert await life.stale_tombstones(older_than) == [D1]
    assert await life.resume_blob_deletion(D1, older_than) is True
    # renewed: an upload of the digest waits again while the bytes go
    assert await life.stale_tombstones(older_than) == []
    assert await store.claim_blob(D1, 3) is None
    await life.end_blob_deletion(D1)
    assert await store.claim_blob(D1, 3) is not None


async def test_a_stale_tombstone_under_a_new_upload_keeps_its_bytes(store: MetadataStore
                                                                     ) -> None:
    life = LifecycleStore(store)
    await store.link_blob("drop/it", D2, 3)
    await life.delete_repository("drop/it")
    assert await life.begin_blob_deletion(D2, time.time() + 10) == 3
    await _age_tombstone(store, D2, TOMBSTONE_TIMEOUT + 60)
    older_than = time.time() - TOMBSTONE_TIMEOUT
    stale = await life.stale_tombstones(older_than)
    # between the listing and the take-over, an upload claims the digest and links it:
    # the bytes on disk are now the upload's, and must stay
    assert await store.claim_blob(D2, 3) is not None  # clears the stale tombstone
    await store.link_blob("new/one", D2, 3)
    assert stale == [D2]
    assert await life.resume_blob_deletion(D2, older_than) is False
    assert await store.blob_in_repository("new/one", D2) is not None


async def test_a_stopped_batch_is_aged_in_a_few_statements(store: MetadataStore) -> None:
    """`defer_blob_deletions` ages each tombstone named (past the statement's limit on
    bound values), and no other."""
    life = LifecycleStore(store)
    now = time.time()
    named = sorted(str(Digest.of(f"blob {i}".encode())) for i in range(1201))
    other = str(Digest.of(b"another collector's"))
    await store.engines.transaction(lambda conn: conn.execute(
        insert(blob_deletions), [{"digest": d, "started_at": now} for d in [*named, other]]))
    older_than = time.time() - TOMBSTONE_TIMEOUT
    assert await life.stale_tombstones(older_than) == []
    await life.defer_blob_deletions(named)
    assert sorted(await life.stale_tombstones(time.time() - TOMBSTONE_TIMEOUT)) == named
