"""Retention policies: which tags go, by rule, before each collection.

The first rule whose `repositories` glob matches a repository applies to it (see
`config.settings.RetentionRule`). Deleting a tag only untags its manifest; the collector
then frees what nothing else uses. A tag pushed again after the plan was made is kept.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockyard.config.settings import RetentionRule, Settings
from dockyard.core.lifecycle import LifecycleBackend
from dockyard.globs import glob_matches
from dockyard.oci.reference import names, subject_of
from dockyard.regex import compile_regex

log = logging.getLogger("dockyard.gc")


@dataclass
class RetentionReport:
    dry_run: bool
    #: repository -> tags deleted (or that would be)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    #: one line per repository whose rule could not be applied (the others were)
    errors: list[str] = field(default_factory=list)
    #: one line per group of repositories that a rule other than before the one glob
    #: dialect governs now (`regrouped`): what an operator upgrading should look at
    regrouped: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.deleted.values())


def configured_rules(settings: Settings) -> list[RetentionRule]:
    """`retention.rules`, preceded by one rule per pull-through cache with a
    `retention`: its tags not pulled, nor fetched again, within that time go (and the
    collector then frees what they held), whatever the rules below say."""
    cache = [RetentionRule(repositories=f"{p.prefix}/**", keep_pulled_within=p.retention,
                           delete_older_than=p.retention)
             for p in settings.proxy if p.retention is not None]
    return cache + list(settings.retention.rules)


def rule_index(rules: list[RetentionRule], name: str, *, before: bool = False
               ) -> int | None:
    """The index of the first rule whose glob matches `name` (None: no rule); with
    `before`, as globs read before the one glob dialect: fnmatch's over the whole
    name, `*` and `?` crossing `/`."""
    matches = fnmatch.fnmatchcase if before else glob_matches
    return next((i for i, r in enumerate(rules) if matches(name, r.repositories)), None)


def rule_for(rules: list[RetentionRule], name: str) -> RetentionRule | None:
    i = rule_index(rules, name)
    return None if i is None else rules[i]


#: repository names a `regrouped` line gives as examples
REGROUPED_EXAMPLES = 3


def regrouped(rules: list[RetentionRule], governed: Mapping[str, int | None]) -> list[str]:
    """One line per (rule before, rule now) pair that differs for some of the names in
    `governed` (name -> `rule_index` now): the repositories whose tags another rule (or
    none) decides since the one glob dialect, where a rule like `team/*` took
    `team/sub/app` too. Silent when none moved."""
    moved: dict[tuple[int | None, int | None], list[str]] = {}
    for name, now in governed.items():
        before = rule_index(rules, name, before=True)
        if before != now:
            moved.setdefault((before, now), []).append(name)

    def rule(i: int | None) -> str:
        return "no rule" if i is None else f'the rule for "{rules[i].repositories}"'

    lines = []
    for (before, now), group in sorted(moved.items(), key=lambda kv: str(kv[0])):
        shown = ", ".join(sorted(group)[:REGROUPED_EXAMPLES])
        more = len(group) - REGROUPED_EXAMPLES
        lines.append(
            f"{len(group)} repositor{'y' if len(group) == 1 else 'ies'} ({shown}"
            f"{f' and {more} more' if more > 0 else ''}) now under {rule(now)}, not "
            f"{rule(before)} as before the one glob dialect (a * or ? stays within one "
            "path component; a ** component spans any number)")
    return lines


def doomed_tags(rule: RetentionRule, tags: list[tuple[str, float, float | None]], now: float
                ) -> list[tuple[str, float]]:
    """(tag, pushed at) of the tags `rule` deletes among `tags`."""
    keep: set[str] = set()
    if rule.keep_tags:
        pattern = compile_regex(rule.keep_tags)
        keep |= {t for t, _, _ in tags if pattern.search(t)}
    if rule.keep_last is not None:
        newest = sorted(tags, key=lambda t: (t[1], t[0]), reverse=True)[:rule.keep_last]
        keep |= {t for t, _, _ in newest}
    if rule.keep_pulled_within is not None:
        since = now - rule.keep_pulled_within.total_seconds()
        keep |= {t for t, _, pulled in tags if pulled is not None and pulled >= since}
    if rule.delete_older_than is not None:
        before = now - rule.delete_older_than.total_seconds()
        return [(t, at) for t, at, _ in tags if t not in keep and at < before]
    if rule.keep_last is not None:
        return [(t, at) for t, at, _ in tags if t not in keep]
    return []


async def apply_retention(lifecycle: LifecycleBackend, rules: list[RetentionRule], *,
                          dry_run: bool = False) -> RetentionReport:
    """Delete (or with `dry_run`, list) the tags the rules do not keep."""
    report = RetentionReport(dry_run)
    if not rules:
        return report
    now = time.time()
    repositories = await lifecycle.repositories()
    governed = {name: rule_index(rules, name) for _, name in repositories}
    report.regrouped = regrouped(rules, governed)
    for repo_id, name in repositories:
        index = governed[name]
        if index is None:
            continue
        rule = rules[index]
        gone: list[str] = []
        try:
            doomed = await _doomed(lifecycle, repo_id, rule, now)
            for tag, at in doomed:
                if dry_run or await lifecycle.delete_tag_if_unchanged(repo_id, tag, at):
                    gone.append(tag)
        except Exception as exc:  # one repository's failure stops no other's
            log.warning("retention: %s failed: %s", name, exc)
            report.errors.append(f"retention of {name}: {exc}")
        if gone:
            report.deleted[name] = sorted(gone)
    return report


async def _doomed(lifecycle: LifecycleBackend, repo_id: int, rule: RetentionRule,
                  now: float) -> list[tuple[str, float]]:
    """The rule's tags to delete in the repository. Attached tags (signatures...) are not
    ranked with the images (ten new signatures would push every image out of
    `keep_last: 10`): each stays while the manifest it names is in the repository."""
    tags = await lifecycle.tags(repo_id)
    attached = [(t, at) for t, at, _ in tags if subject_of(t) is not None]
    doomed = doomed_tags(rule, [t for t in tags if subject_of(t[0]) is None], now)
    if attached:
        present = {node.digest for node in await lifecycle.manifest_graph(repo_id)}
        doomed += [(t, at) for t, at in attached if not _present(subject_of(t), present)]
    return doomed


def _present(subject: str | None, present: set[str]) -> bool:
    """Whether the manifest an attached tag names is among `present` (a sha512 one by
    the start of its hex, as the referrers tag schema cuts it)."""
    if subject is None or subject in present:
        return subject is not None
    return subject.startswith("sha512:") and any(names(subject, d) for d in present)


def keeps_untagged(rules: list[RetentionRule], name: str) -> bool:
    """Whether the rules ask the collector to leave this repository's untagged manifests."""
    rule = rule_for(rules, name)
    return rule is not None and not rule.delete_untagged
