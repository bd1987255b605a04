"""The collector's liveness rules and retention's tag selection (pure functions)."""

from __future__ import annotations

from datetime import timedelta

from dockyard.config.settings import RetentionRule
from dockyard.gc.collector import live_manifests
from dockyard.gc.retention import doomed_tags, rule_for
from dockyard.metadata.lifecycle import ManifestNode

OLD, NEW, CUTOFF = 100.0, 300.0, 200.0


def node(i: int, *, tagged: bool = False, created: float = OLD, subject: str | None = None,
         children: tuple[str, ...] = ()) -> ManifestNode:
    return ManifestNode(i, f"sha256:{i:064x}", created, tagged, subject, children)


def digest(i: int) -> str:
    return f"sha256:{i:064x}"


def test_tagged_and_young_manifests_live_untagged_old_ones_die() -> None:
    nodes = [node(1, tagged=True), node(2, created=NEW), node(3)]
    assert live_manifests(nodes, CUTOFF, keep_referrers=False) == {1, 2}


def test_children_of_a_live_index_live_and_of_a_dead_one_die() -> None:
    nodes = [node(1, tagged=True, children=(digest(2),)), node(2),
             node(3, children=(digest(4),)), node(4)]
    assert live_manifests(nodes, CUTOFF, keep_referrers=False) == {1, 2}


def test_nested_indexes_keep_grandchildren() -> None:
    nodes = [node(1, tagged=True, children=(digest(2),)), node(2, children=(digest(3),)),
             node(3)]
    assert live_manifests(nodes, CUTOFF, keep_referrers=False) == {1, 2, 3}


def test_referrers_live_with_their_subject_and_die_without_it() -> None:
    nodes = [node(1, tagged=True), node(2, subject=digest(1)), node(3, subject=digest(9)),
             node(4, subject=digest(2))]  # a signature of a signature
    assert live_manifests(nodes, CUTOFF, keep_referrers=False) == {1, 2, 4}
    assert live_manifests(nodes, CUTOFF, keep_referrers=True) == {1, 2, 3, 4}


def test_child_digest_absent_from_the_repository_is_ignored() -> None:
    nodes = [node(1, tagged=True, children=(digest(7),))]
    assert live_manifests(nodes, CUTOFF, keep_referrers=False) == {1}


NOW = 1_000_000.0
DAY = 86400.0


def tags(*spec: tuple[str, float, float | None]) -> list[tuple[str, float, float | None]]:
    return list(spec)


def test_keep_last_keeps_the_newest_and_protected_tags() -> None:
    rule = RetentionRule(keep_last=2, keep_tags=r"^latest$")
    t = tags(("a", NOW - 5, None), ("b", NOW - 4, None), ("c", NOW - 3, None),
             ("d", NOW - 2, None), ("latest", NOW - 10, None))
    assert sorted(x for x, _ in doomed_tags(rule, t, NOW)) == ["a", "b"]


def test_delete_older_than_spares_recent_and_recently_pulled() -> None:
    rule = RetentionRule(delete_older_than=timedelta(days=30),
                         keep_pulled_within=timedelta(days=7))
    t = tags(("old", NOW - 40 * DAY, None), ("old-pulled", NOW - 40 * DAY, NOW - DAY),
             ("old-pulled-long-ago", NOW - 40 * DAY, NOW - 20 * DAY), ("new", NOW - DAY, None))
    assert sorted(x for x, _ in doomed_tags(rule, t, NOW)) == ["old", "old-pulled-long-ago"]


def test_rule_without_a_deleting_clause_deletes_nothing() -> None:
    rule = RetentionRule(keep_tags="^v")
    assert doomed_tags(rule, tags(("a", 0.0, None)), NOW) == []


def test_first_matching_rule_applies() -> None:
    rules = [RetentionRule(repositories="tools/*", keep_last=1), RetentionRule(keep_last=5)]
    assert rule_for(rules, "tools/x") is rules[0]
    # a retention glob reads as an access rule's: `*` stays within one component
    assert rule_for(rules, "tools/x/y") is rules[1]
    assert rule_for([RetentionRule(repositories="tools/**", keep_last=1)], "tools/x/y")
    assert rule_for([RetentionRule(keep_last=1)], "a/b/c")  # the default is every name
    assert rule_for(rules, "other") is rules[1]
    assert rule_for(rules[:1], "other") is None
