"""What a pull of a manifest leaves behind, over a real SQLite store: a GET or a HEAD by
tag renews the tag's last-pull time (containerd resolves a tag with a HEAD, and
retention's `keep_pulled_within` must see that pull); only a GET is a pull event, as in
Distribution; a job's look (`pull=False`) is neither."""

from __future__ import annotations

import json

from dockyard.config.settings import EndpointSettings
from dockyard.core.manifests import ManifestService
from dockyard.core.notify import Notifier
from dockyard.metadata.engine import open_engines
from dockyard.metadata.notifications import NotificationStore
from dockyard.metadata.store import MetadataStore
from tests.unit.metadata.test_store import image


class Pulls:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def record(self, name: str, tag: str) -> None:
        self.seen.append((name, tag))


async def test_head_and_get_by_tag_are_pulls_and_only_a_get_is_an_event(
        sqlite_url: str) -> None:
    store = MetadataStore(open_engines(sqlite_url))
    try:
        pushed = await image(store, "team/app", "one", tag="v1")
        outbox = NotificationStore(store)
        endpoint = EndpointSettings.model_validate({"name": "all",
                                                    "url": "http://127.0.0.1:1/"})
        pulls = Pulls()
        manifests = ManifestService(store, max_size=1 << 20, delete_enabled=True,
                                    pulls=pulls,  # type: ignore[arg-type]
                                    notifier=Notifier(outbox, [endpoint], "host:5000"))
        head = await manifests.pull("team/app", "v1", payload=False)
        assert head.record.digest == pushed.digest
        get = await manifests.pull("team/app", "v1")
        assert get.record.payload == pushed.payload
        await manifests.get("team/app", "v1", pull=False)  # a sync's look
        await manifests.pull("team/app", pushed.digest)  # by digest: no tag to renew
        assert pulls.seen == [("team/app", "v1"), ("team/app", "v1")]
        events = [json.loads(row[2]) for row in await outbox.pending("all", 10)]
        assert [(e["action"], e["target"].get("tag")) for e in events] == [
            ("pull", "v1"), ("pull", None)]
    finally:
        await store.close()
