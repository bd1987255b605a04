"""The access policy: first matching repository glob decides; subjects union within it."""

from __future__ import annotations

from dockyard.auth.identity import Identity, Scope
from dockyard.auth.policy import Policy

PLATFORM = Policy([
    ("private/**", {"authenticated": ["pull"], "group:admins": ["*"]}),
    ("**", {"anonymous": ["pull"], "builder": ["pull", "push"], "group:admins": ["*"]}),
], catalog=["group:admins"])

ANON = Identity()
BUILDER = Identity(user="builder")
READER = Identity(user="reader")
ADMIN = Identity(user="root", groups=frozenset({"admins"}))


def test_globs_stay_within_a_component_unless_doubled() -> None:
    policy = Policy([("library/*", {"anonymous": ["pull"]}),
                     ("team/**", {"anonymous": ["push"]})])
    assert policy.actions(ANON, "library/busybox") == {"pull"}
    assert policy.actions(ANON, "library/a/b") == frozenset()
    assert policy.actions(ANON, "team/a/b") == {"push"}


def test_platform_policy() -> None:
    assert PLATFORM.actions(ANON, "tools/busybox") == {"pull"}
    assert PLATFORM.actions(BUILDER, "tools/busybox") == {"pull", "push"}
    assert PLATFORM.actions(ADMIN, "tools/busybox") >= {"pull", "push", "delete"}
    # the first matching rule decides: private/ is not readable anonymously
    assert PLATFORM.actions(ANON, "private/x") == frozenset()
    assert PLATFORM.actions(READER, "private/x") == {"pull"}
    assert PLATFORM.actions(BUILDER, "private/x") == {"pull"}


def test_intersection_and_catalog() -> None:
    asked = Scope("repository", "tools/busybox", frozenset({"pull", "push", "delete"}))
    assert PLATFORM.allowed(BUILDER, asked) == {"pull", "push"}
    assert PLATFORM.allowed(ANON, asked) == {"pull"}
    catalog = Scope("registry", "catalog", frozenset({"*"}))
    assert PLATFORM.allowed(ADMIN, catalog) == {"*"}
    assert PLATFORM.allowed(BUILDER, catalog) == frozenset()
    assert PLATFORM.allowed(ADMIN, Scope("registry", "admin", frozenset({"*"}))) == frozenset()


def test_scope_parsing() -> None:
    s = Scope.parse("repository:a/b:pull,push")
    assert s == Scope("repository", "a/b", frozenset({"pull", "push"}))
    assert str(s) == "repository:a/b:pull,push"
    assert Scope.parse("repository:localhost:5000/a:pull") == Scope(
        "repository", "localhost:5000/a", frozenset({"pull"}))
    assert Scope.parse("nonsense") is None
    assert Scope.parse("repository::pull") is None


def test_who_pulls_everything() -> None:
    assert PLATFORM.pulls_everything(ADMIN)
    assert PLATFORM.pulls_everything(READER)  # authenticated may pull private/**
    assert not PLATFORM.pulls_everything(ANON)  # not private/**
    team = Policy([("team/**", {"teamer": ["pull"], "group:admins": ["pull"]}),
                   ("**", {"group:admins": ["*"]})])
    assert not team.pulls_everything(Identity(user="teamer"))
    assert team.pulls_everything(ADMIN)
    # the first matching rule decides: no pull on team/** is no pull there
    assert not Policy([("team/**", {"teamer": ["pull"]}),
                       ("**", {"group:admins": ["*"]})]).pulls_everything(ADMIN)
    assert not Policy([("*", {"anonymous": ["pull"]})]).pulls_everything(ANON)
