"""The access policy: ordered repository rules that grant actions to subjects.

The first rule whose repository glob matches the name decides; within it, an identity gets
the union of the actions granted to every subject it matches (`anonymous` matches everyone,
`authenticated` every logged-in user, then the user's name and `group:<name>`). `*` is every
action. Repository globs are read by `dockyard.globs`: `*` within one path component,
a `**` component across any number of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dockyard.auth.identity import Identity, Scope
from dockyard.globs import glob_matches, matches_every_name

ALL_ACTIONS = frozenset({"pull", "push", "delete"})


def _expand(actions: Iterable[str]) -> frozenset[str]:
    s = frozenset(actions)
    return ALL_ACTIONS | {"*"} if "*" in s else s


@dataclass(frozen=True)
class Rule:
    glob: str
    allow: Mapping[str, frozenset[str]]


class Policy:
    """Answers `allowed(identity, scope)` from the configured rules."""

    def __init__(self, rules: Sequence[tuple[str, Mapping[str, Sequence[str]]]],
                 catalog: Iterable[str] = (), admin: Iterable[str] = ()) -> None:
        self.rules = [Rule(glob, {s: _expand(a) for s, a in allow.items()})
                      for glob, allow in rules]
        self.catalog = frozenset(catalog)
        self.admin = frozenset(admin)

    def actions(self, identity: Identity, repository: str) -> frozenset[str]:
        """Every action `identity` may take on `repository`."""
        subjects = identity.subjects()
        for rule in self.rules:
            if glob_matches(repository, rule.glob):
                out: set[str] = set()
                for subject, acts in rule.allow.items():
                    if subject in subjects:
                        out |= acts
                return frozenset(out)
        return frozenset()

    def pulls_everything(self, identity: Identity) -> bool:
        """Whether `identity` may pull every repository: each rule up to the first one
        matching every name (`**`) grants it pull (the catalog then needs no filter)."""
        subjects = identity.subjects()
        for rule in self.rules:
            if not any("pull" in acts for s, acts in rule.allow.items() if s in subjects):
                return False
            if matches_every_name(rule.glob):
                return True
        return False

    def may_list_catalog(self, identity: Identity) -> bool:
        return bool(self.catalog & identity.subjects())

    def allowed(self, identity: Identity, scope: Scope) -> frozenset[str]:
        """The part of `scope.actions` the policy grants to `identity`."""
        if scope.type == "repository":
            granted = self.actions(identity, scope.name)
            return frozenset(a for a in scope.actions if a in granted)
        if scope.type == "registry" and scope.name == "catalog":
            return scope.actions if self.may_list_catalog(identity) else frozenset()
        if scope.type == "registry" and scope.name == "admin":
            # the registry-wide admin API (the change feed, replica status)
            return scope.actions if self.admin & identity.subjects() else frozenset()
        return frozenset()
