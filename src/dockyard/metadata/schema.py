"""Tables of the metadata store (SQLAlchemy Core). Migrations live in `migrations/`.

Shaped for the queries that matter: a manifest GET is one indexed read, references
(`manifest_blobs`, `manifest_children`, `manifests.subject_digest`) are what garbage
collection, usage and the referrers API follow. Times are UNIX seconds (float).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

DIGEST = String(160)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Double, nullable=False),
    # last uploaded, mounted or HEAD-checked: the collector's grace period counts from here
    Column("touched_at", Double, nullable=False),
    # set by `dockyard fsck --repair` when the bytes were damaged or gone (they are
    # removed): the blob is then unknown to clients until a push of it clears the mark
    Column("corrupt_at", Double),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           primary_key=True),
    Column("digest", DIGEST, ForeignKey("blobs.digest"), primary_key=True),
    Column("linked_at", Double, nullable=False),
    Index(None, "digest"),
)

#: the rows the referrers indexes hold: manifests that name a subject
REFERRER = "subject_digest IS NOT NULL"

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255)),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("subject_digest", DIGEST),
    Column("config_digest", DIGEST),
    Column("annotations", Text),
    Column("created_at", Double, nullable=False),
    # last pushed (a PUT of the same bytes renews it): the collector's grace counts from here
    Column("touched_at", Double),
    UniqueConstraint("repository_id", "digest"),
    # a subject's referrers in the referrers API's order, all of them or those of one
    # artifact type: a page of them is one range of either (migration 0019); deletes
    # find a subject's referrers by the first two columns. Partial: only referrers (a
    # few manifests of most registries) are in them, so they cost no write elsewhere.
    # The migration makes them partial on PostgreSQL too; saying so here
    # (`postgresql_where`) would import SQLAlchemy's PostgreSQL dialect on SQLite
    Index("ix_manifests_referrers", "repository_id", "subject_digest", "created_at", "id",
          sqlite_where=text(REFERRER)),
    Index("ix_manifests_referrers_by_type", "repository_id", "subject_digest",
          "artifact_type", "created_at", "id", sqlite_where=text(REFERRER)),
)

manifest_blobs = Table(
    "manifest_blobs",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"),
           primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Index(None, "digest"),
)

manifest_children = Table(
    "manifest_children",
    metadata,
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"),
           primary_key=True),
    Column("child_digest", DIGEST, primary_key=True),
    Index(None, "child_digest"),
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("manifest_id", Integer, ForeignKey("manifests.id", ondelete="CASCADE"),
           nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("pulled_at", Double),
    # the account that last pushed the tag (None: anonymous, a job, an import)
    Column("pushed_by", String(255)),
    Index(None, "manifest_id"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repository", String(255), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # who opened it (`user:<name>` or `addr:<client>`), for the cap on open sessions
    Column("owner", String(255)),
    # the request writing the session now (`core.leases.process_holder()` and a request
    # number) and until when: a hold past `held_until` is its dead holder's, and free
    Column("holder", String(200)),
    Column("held_until", Double),
    Index(None, "updated_at"),
    Index(None, "owner"),
)

blob_deletions = Table(
    "blob_deletions",
    metadata,
    # a blob whose row the collector removed and whose bytes it is deleting now; an
    # upload of the same digest waits for the bytes to go before publishing its own
    Column("digest", DIGEST, primary_key=True),
    Column("started_at", Double, nullable=False),
)

deleted_links = Table(
    "deleted_links",
    metadata,
    # blobs a repository deletion unlinked: the collector credits their bytes to it
    Column("repository", String(255), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("deleted_at", Double, nullable=False),
    Index(None, "digest"),
)

login_failures = Table(
    "login_failures",
    metadata,
    # one row per failed login and key (`addr:<client>`, `user:<name>`): the failed-login
    # limiter's shared memory, so every worker (and node) counts against one budget
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False),
    Column("failed_at", Double, nullable=False),
    Index(None, "key", "failed_at"),
    Index(None, "failed_at"),
)

Index("ix_blobs_touched_at", blobs.c.touched_at)
# blobs also has, on PostgreSQL only (made by migration 0018), `ix_blobs_digest_bytewise`
# on `digest COLLATE "C"`: the digest in byte order (`MetadataStore._sorted`: the
# collector's pages of unlinked blobs, the scrub's slices), which the primary key's
# index there (in the database's collation) does not serve; on SQLite it does (BINARY).
# Not declared here: Alembic can compare a collated expression index on neither dialect
Index("ix_manifests_touched_at", manifests.c.touched_at)

leases = Table(
    "leases",
    metadata,
    # who runs a job (or holds any other named right) across processes and hosts, until
    # when: a holder renews before `expires_at`; a dead holder's lease simply runs out
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
)

events = Table(
    "events",
    metadata,
    # the change feed: one row per change of what a pull can see, written in the
    # transaction of the change; ids grow in commit order (see `metadata/events.py`).
    # AUTOINCREMENT on SQLite, so an id is never reused after its row was pruned
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", Double, nullable=False),
    # manifest.put, tag.set, tag.deleted, manifest.deleted, blob.deleted,
    # repository.deleted
    Column("kind", String(32), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("tag", String(128)),
    Column("digest", DIGEST),
    Column("media_type", String(255)),
    # on a manifest.put or tag.set from a push, the account that pushed; else NULL
    Column("actor", String(255)),
    Index(None, "at"),
    sqlite_autoincrement=True,
)

registry_state = Table(
    "registry_state",
    metadata,
    # small named values every node shares: the feed's pruning mark, a replica's cursor,
    # primary and promotion
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)


usage_samples = Table(
    "usage_samples",
    metadata,
    # the data filesystem's use, sampled by the `usage.sample` job: the growth trend
    # `dockyard status` turns into days until full (kept for 30 days)
    Column("taken_at", Double, primary_key=True),
    Column("used_bytes", BigInteger, nullable=False),
    Column("free_bytes", BigInteger, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("blob_bytes", BigInteger, nullable=False),
)

collections = Table(
    "collections",
    metadata,
    # one row per finished collection: what it freed and what stayed stored after it
    # (`dockyard status`, alerts, the operations page's last collections and storage
    # trend); kept for 90 days. Written by the collector itself (`Collector._record`)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Double, nullable=False),
    Column("duration", Double, nullable=False),
    Column("manifests_deleted", Integer, nullable=False),
    Column("blobs_deleted", Integer, nullable=False),
    Column("bytes_freed", BigInteger, nullable=False),
    Column("stored_blobs", Integer, nullable=False),
    Column("stored_bytes", BigInteger, nullable=False),
    Column("failed", Integer, nullable=False),
    Index(None, "started_at"),
)


proxy_tags = Table(
    "proxy_tags",
    metadata,
    # provenance of a tag of a pull-through cache: where it came from, when it was
    # cached and last confirmed upstream (its TTL counts from `checked_at`); goes with
    # the tag
    Column("repository_id", Integer, primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("upstream", String(1000), nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("fetched_at", Double, nullable=False),
    Column("checked_at", Double, nullable=False),
    ForeignKeyConstraint(["repository_id", "tag"], ["tags.repository_id", "tags.name"],
                         ondelete="CASCADE"),
)


proxy_misses = Table(
    "proxy_misses",
    metadata,
    # what a pull-through cache's upstream answered "not found" for (a tag or a digest
    # of a local repository name), and until when the cache answers 404 itself instead
    # of asking again (`proxy[].not_found_ttl`); rows past `until` are purged by a job
    Column("repository", String(255), primary_key=True),
    Column("reference", String(160), primary_key=True),
    Column("until", Double, nullable=False),
    Index(None, "until"),
)


mirror_runs = Table(
    "mirror_runs",
    metadata,
    # one row per finished `dockyard sync` pass over one mirror source (the last few
    # are kept): when, how it ended, and its report as JSON
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double, nullable=False),
    Column("status", String(20), nullable=False),
    Column("report", Text, nullable=False),
    Index(None, "source", "started_at"),
)

mirror_tags = Table(
    "mirror_tags",
    metadata,
    # where a mirrored tag came from and when: written by the sync that set the tag
    Column("repository", String(255), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("source", String(200), nullable=False),
    Column("upstream", String(512), nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("mirrored_at", Double, nullable=False),
    Index(None, "source"),
)


notifications = Table(
    "notifications",
    metadata,
    # the notification outbox: one row per (endpoint, event) not yet delivered, deleted
    # once the endpoint accepted it; sent in id order per endpoint (see
    # `metadata/notifications.py`). AUTOINCREMENT on SQLite: ids never reused
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("endpoint", String(100), nullable=False),
    Column("at", Double, nullable=False),
    # the event as sent (Distribution's JSON event, without the envelope)
    Column("event", Text, nullable=False),
    Index(None, "endpoint", "id"),
    sqlite_autoincrement=True,
)


revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    # browser sessions logged out before their cookie expires: a copy of the cookie is
    # refused until then (`web/sessions.py`); expired rows go with the next logout
    Column("sid", String(64), primary_key=True),
    Column("expires_at", Double, nullable=False),
    Index(None, "expires_at"),
)


secrets = Table(
    "secrets",
    metadata,
    # random keys every worker and node must share (the web UI's session signing key),
    # made once by whoever needs one first
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
)


job_runs = Table(
    "job_runs",
    metadata,
    # one row per finished run of a background job (the last few of each job are kept,
    # see `metadata/jobruns.py`): who ran it, when, how it ended, a short summary
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(200), nullable=False),
    Column("holder", String(255), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double, nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("summary", Text, nullable=False),
    Index(None, "job", "started_at"),
)
