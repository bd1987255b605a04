"""`mirror:` in the config: defaults, and bad values named by their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.config.mirror import MAX_KEY
from dockyard.config.settings import ConfigError, Settings, load_settings
from dockyard.core.mirrors import job_name
from dockyard.metadata.schema import job_runs, leases, mirror_runs, mirror_tags


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "c.yml"
    path.write_text(text)
    return load_settings(path, env={})


def test_defaults_and_destination_names(tmp_path: Path) -> None:
    settings = load(tmp_path, """
mirror:
  - registry: quay.io
    repository: kubernetes-ingress-controller/nginx-ingress-controller
  - registry: docker.io
    repository: library/redis
    prefix: mirror
  - {name: pg, registry: docker.io, repository: library/postgres, destination: db/pg}
""")
    sources = settings.mirror  # type: ignore[attr-defined]
    assert [(s.key, s.local) for s in sources] == [
        ("nginx-ingress-controller", "nginx-ingress-controller"),
        ("mirror/redis", "mirror/redis"), ("pg", "db/pg")]
    first = sources[0]
    assert first.schedule.total_seconds() == 3600
    assert first.prune is False
    assert first.tls_verify is True
    assert first.credentials is None
    assert sources[1].upstream == "docker.io/library/redis"  # Docker Hub's official images
    assert first.upstream == "quay.io/kubernetes-ingress-controller/nginx-ingress-controller"


@pytest.mark.parametrize(("body", "key", "reason"), [
    ("tags_regex: '(('", "mirror.0.tags_regex", "invalid regular expression"),
    ("newest: 0", "mirror.0.newest", "greater than or equal to 1"),
    ("platforms: [linux]", "mirror.0.platforms", "OS/ARCH"),
    ("schedule: soon", "mirror.0.schedule", ""),
    ("credentials: {username: u, password: hunter2}", "mirror.0.credentials.password",
     "unknown key"),
    ("credentials: {username: u}", "mirror.0.credentials", "never written in the config"),
    ("credentials: {password_env: X}", "mirror.0.credentials", "need a username"),
    ("destination: Bad/Name", "mirror.0", "invalid repository name"),
    ("tagz: ['*']", "mirror.0.tagz", "unknown key"),
    ("registry: https://quay.io", "mirror.0.registry", "no scheme"),
    (f"name: {'a' * 181}", "mirror.0.name", "at most 180 characters"),
    (f"destination: {'a' * 181}", "mirror.0", "give it a shorter `name`"),
    (f"prefix: {'p' * 90}\n    destination: {'d' * 90}", "mirror.0",
     "give it a shorter `name`"),
])
def test_a_bad_source_is_named_by_its_key(tmp_path: Path, body: str, key: str,
                                          reason: str) -> None:
    head = "" if body.startswith("registry:") else "registry: quay.io\n    "
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"mirror:\n  - {head}repository: org/app\n    {body}\n")
    assert f"{key}: " in str(caught.value)
    assert reason in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_two_sources_of_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two sources are called 'app'"):
        load(tmp_path, "mirror:\n  - {registry: a.io, repository: x/app}\n"
                       "  - {registry: b.io, repository: y/app}\n")


def test_the_longest_source_key_fits_every_column_that_holds_it(tmp_path: Path) -> None:
    """A source's key is stored in columns PostgreSQL holds to their length (SQLite
    ignores it): the longest key the config takes must fit each, else its job never
    runs there."""
    key = "a" * MAX_KEY
    settings = load(tmp_path, f"mirror:\n  - {{name: {key}, registry: quay.io, "
                              f"repository: org/app, destination: {'d' * 200}}}\n")
    assert isinstance(settings, Settings)
    assert settings.mirror[0].key == key  # a long destination with a short enough name
    stored = {leases.c.name: [f"job:{job_name(key)}", f"mirror:{key}"],
              job_runs.c.job: [job_name(key)], mirror_runs.c.source: [key],
              mirror_tags.c.source: [key]}
    for column, values in stored.items():
        for value in values:
            assert len(value) <= column.type.length, (column, len(value))
