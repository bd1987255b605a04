"""The per-process cache of manifest reads on SQLite: kept until any connection commits."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from dockyard.metadata.fastread import FastReader
from dockyard.metadata.readcache import MAX_ENTRY, ReadCache, WalHeader
from dockyard.metadata.store import _MANIFEST, MetadataStore
from tests.unit.metadata.test_store import image


def _path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


async def test_a_read_is_kept_until_a_commit(store: MetadataStore) -> None:
    pushed = await image(store, "app", '{"one":1}', "v1")
    await store.manifest("app", tag="v1")  # the process's first read opens the cache
    first = await store.manifest("app", tag="v1")
    again = await store.manifest("app", tag="v1")
    assert first is not None
    assert again is not None
    assert again.payload is first.payload  # the same answer: no read
    assert again.digest == pushed.digest
    # a commit (a tag elsewhere) drops every answer
    await image(store, "other", '{"two":2}', "v1")
    after = await store.manifest("app", tag="v1")
    assert after is not None
    assert after.payload is not first.payload
    assert after.payload == first.payload


async def test_a_tag_moved_or_deleted_is_seen_at_once(store: MetadataStore) -> None:
    await image(store, "app", '{"one":1}', "v1")
    assert (await store.manifest("app", tag="v1", payload=False)) is not None
    assert (await store.manifest("app", tag="v1")) is not None
    moved = await image(store, "app", '{"two":2}', "v1")
    got = await store.manifest("app", tag="v1")
    head = await store.manifest("app", tag="v1", payload=False)
    assert got is not None
    assert head is not None
    assert (got.digest, head.digest) == (moved.digest, moved.digest)
    assert await store.delete_tag("app", "v1")
    assert await store.manifest("app", tag="v1") is None
    assert await store.manifest("app", tag="v1", payload=False) is None


async def test_a_commit_by_another_process_is_seen_at_once(store: MetadataStore,
                                                           sqlite_url: str) -> None:
    pushed = await image(store, "app", '{"one":1}', "v1")
    for _ in range(2):
        found = await store.manifest("app", digest=pushed.digest)
        assert found is not None
    # what an administrator's sqlite3, or an older Dockyard, would do: no cooperation
    script = ("import sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1], timeout=30)\n"
              "db.execute('DELETE FROM tags')\n"
              "db.execute('DELETE FROM manifest_blobs')\n"
              "db.execute('DELETE FROM manifests')\n"
              "db.commit()\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                str(_path(sqlite_url)))
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert await store.manifest("app", digest=pushed.digest) is None
    assert await store.manifest("app", tag="v1") is None


def test_nothing_is_cached_without_a_wal(sqlite_url: str) -> None:
    path = _path(sqlite_url)
    db = sqlite3.connect(path)  # the only connection: it may leave WAL mode
    assert db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    db.close()
    reader = FastReader(path)
    try:
        query = _MANIFEST[True, True]
        first = reader.fetch(query, {"name": "none", "ref": "v1"})
        assert first == reader.fetch(query, {"name": "none", "ref": "v1"}) == []
        assert reader.cached == 0
    finally:
        reader.close()


class _Header(WalHeader):
    """A header that says what the test tells it (None: a commit is writing it)."""

    def __init__(self) -> None:
        self.now: bytes | None = b"a" * 96

    def read(self) -> bytes | None:
        return self.now

    def close(self) -> None:
        pass


def test_a_header_being_written_serves_and_keeps_nothing() -> None:
    header = _Header()
    cache = ReadCache(header)
    seen, _ = cache.get("k")
    cache.put(seen, "k", [("x",)])
    assert cache.get("k") == (seen, [("x",)])
    header.now = None  # a commit is writing the header: whatever it brings
    assert cache.get("k") == (None, None)
    cache.put(None, "k", [("y",)])
    assert len(cache) == 0
    header.now = b"b" * 96
    seen, found = cache.get("k")
    assert found is None
    assert seen == b"b" * 96


def test_an_answer_read_across_a_commit_is_not_kept() -> None:
    header = _Header()
    cache = ReadCache(header)
    seen, _ = cache.get("k")
    header.now = b"b" * 96  # another process commits between the look and the read
    cache.get("other")
    cache.put(seen, "k", [("old",)])
    assert cache.get("k")[1] is None


def test_bounded_by_bytes_and_entries_least_recently_used_first() -> None:
    cache = ReadCache(_Header(), max_bytes=10_000, max_entries=3)
    for key in "abc":
        seen, _ = cache.get(key)
        cache.put(seen, key, [(key * 100,)])
    cache.get("a")  # used: "b" is now the oldest
    seen, _ = cache.get("d")
    cache.put(seen, "d", [("d" * 100,)])
    assert [k for k in "abcd" if cache.get(k)[1] is not None] == ["a", "c", "d"]
    seen, _ = cache.get("big")
    cache.put(seen, "big", [(b"x" * 6_000,)])
    cache.put(seen, "big2", [(b"y" * 6_000,)])  # over max_bytes: "big" goes
    assert cache.get("big")[1] is None
    assert cache.get("big2")[1] is not None
    seen, _ = cache.get("huge")
    cache.put(seen, "huge", [(b"z" * MAX_ENTRY,)])
    assert cache.get("huge")[1] is None


def test_the_header_is_read_only_when_both_copies_agree(tmp_path: Path) -> None:
    copy = bytearray(48)
    copy[12] = 1  # isInit
    shm = tmp_path / "db-shm"
    shm.write_bytes(bytes(copy) * 2 + bytes(40))
    header = WalHeader(tmp_path / "db")
    try:
        assert header.read() == bytes(copy) * 2
        newer = bytearray(copy)
        newer[8] = 7  # iChange: a commit wrote the second copy, not yet the first
        with shm.open("r+b") as f:
            f.seek(48)
            f.write(newer)
        assert header.read() is None
        with shm.open("r+b") as f:
            f.write(newer)
        assert header.read() == bytes(newer) * 2
        with shm.open("r+b") as f:  # a WAL index not built yet
            f.write(bytes(96))
        assert header.read() is None
    finally:
        header.close()
