"""Which upstream tags a mirror source keeps: globs, a regular expression, newest N."""

from __future__ import annotations

from typing import Any

from dockyard.config.mirror import MirrorSource
from dockyard.mirror.select import select_tags, semver
from dockyard.oci.reference import invalid_tags

TAGS = ["latest", "v1.2.0", "v1.10.1", "v1.9", "1.10.0-rc.1", "1.10.0-rc.2", "2",
        "v2.0.0-alpha", "main-3f2a", "1.10.0"]


def source(**fields: Any) -> MirrorSource:
    return MirrorSource(registry="quay.io", repository="org/app", **fields)


def test_no_filter_keeps_every_tag() -> None:
    assert select_tags(source(), TAGS) == sorted(TAGS)


def test_globs_and_a_regex_are_either_or_and_a_regex_matches_the_whole_tag() -> None:
    assert select_tags(source(tags=["v1.*"]), TAGS) == ["v1.10.1", "v1.2.0", "v1.9"]
    assert select_tags(source(tags=["latest"], tags_regex=r"main-[0-9a-f]+"), TAGS) == \
        ["latest", "main-3f2a"]
    assert select_tags(source(tags_regex=r"v1"), TAGS) == []  # not a search


def test_newest_orders_by_semver_not_by_text() -> None:
    assert select_tags(source(newest=3), TAGS) == ["2", "v1.10.1", "v2.0.0-alpha"]
    assert select_tags(source(newest=4), TAGS) == ["1.10.0", "2", "v1.10.1", "v2.0.0-alpha"]
    assert select_tags(source(tags=["v1.*"], newest=2), TAGS) == ["v1.10.1", "v1.9"]


def test_a_pre_release_sorts_below_its_release_and_numbers_compare_as_numbers() -> None:
    assert semver("1.10.0-rc.2") < semver("1.10.0")  # type: ignore[operator]
    assert semver("1.10.0-rc.2") > semver("1.10.0-rc.1")  # type: ignore[operator]
    assert semver("1.0.0-rc.10") > semver("1.0.0-rc.9")  # type: ignore[operator]
    assert semver("v1.9") < semver("1.10")  # type: ignore[operator]
    assert semver("latest") is None
    assert semver("1.2.3.4") is None


def test_names_that_are_no_tag_are_never_kept() -> None:
    # a 5,000-digit "version" raised ValueError from int() (Python's limit on digits)
    # and failed the source on every run
    listed = [*TAGS, "9" * 5000, "not a tag", "-x", "v" + "1" * 200]
    assert select_tags(source(newest=2), listed) == ["2", "v2.0.0-alpha"]
    assert select_tags(source(), listed) == sorted(TAGS)
    assert invalid_tags(listed) == listed[len(TAGS):]


def test_a_regex_matches_in_linear_time_whatever_tag_upstream_lists() -> None:
    # RE2: Python's re backtracked on this pair for minutes (the sync job, in the server)
    hostile = "a" * 58 + "-"
    assert select_tags(source(tags_regex="(a+)+"), [hostile, "aaa"]) == ["aaa"]


def test_a_prune_hands_tags_only_to_sources_of_the_same_upstream() -> None:
    # two sources of other upstreams into one repository, both `7.*`: each handed what
    # it no longer kept to the other, which handed it back, and the tag stayed for ever
    from dockyard.mirror.sync import Siblings

    a = MirrorSource(registry="docker.io", repository="library/redis", tags=["7.*"],
                     newest=1, prune=True, destination="redis")
    b = MirrorSource(registry="quay.io", repository="x/redis", tags=["7.*"], name="quay",
                     destination="redis")
    pin = MirrorSource(registry="docker.io", repository="library/redis", tags=["7.0"],
                       name="pin", destination="redis")
    upstream = ["7.0", "7.1"]
    siblings = Siblings(a, [a, b, pin], upstream)
    assert [s.key for s in siblings.keeping("7.0")] == ["pin"]
    assert siblings.keeping("7.1") == []
    assert Siblings(a, [a, b], upstream).keeping("7.0") == []
