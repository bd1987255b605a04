"""The htpasswd file: bcrypt only, groups, reload on change, verification cache."""

from __future__ import annotations

import os
from pathlib import Path

import bcrypt
import pytest

from dockyard.auth.htpasswd import Entry, HtpasswdError, HtpasswdFile, parse, write_atomic


def _hash(pw: str) -> str:
    return bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()


def test_parse_bcrypt_entries_with_groups() -> None:
    text = f"# comment\n\nalice:{_hash('a')}\nbob:{_hash('b')}:admins, builders\n"
    entries = parse(text)
    assert set(entries) == {"alice", "bob"}
    assert entries["alice"].groups == frozenset()
    assert entries["bob"].groups == {"admins", "builders"}


@pytest.mark.parametrize(("line", "kind"), [
    ("carol:$apr1$abcdefgh$0123456789abcdefghijkl", "MD5 (apr1)"),
    ("carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA1"),
    ("carol:$6$salt$hash", "SHA-crypt"),
    ("carol:plaintext", "crypt(3) or plain text"),
])
def test_other_hashes_are_refused_naming_the_line(line: str, kind: str) -> None:
    with pytest.raises(HtpasswdError) as err:
        parse(f"alice:{_hash('a')}\n{line}\n", "users.htpasswd")
    message = str(err.value)
    assert message.startswith("users.htpasswd:2: user 'carol'")
    assert kind in message
    assert "bcrypt" in message


def test_verify_reload_and_cache(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    write_atomic(path, [Entry("alice", _hash("old").encode())])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    users = HtpasswdFile(path, check_interval=0)
    assert users.verify("alice", "old") is not None
    assert users.cached("alice", "old") is not None
    assert users.verify("alice", "wrong") is None
    assert users.verify("nobody", "old") is None

    write_atomic(path, [Entry("alice", _hash("new").encode(), frozenset({"admins"}))])
    os.utime(path, ns=(1, 1))  # a different mtime even within one clock tick
    assert users.reload() is True
    assert users.cached("alice", "old") is None  # the cache went with the old file
    assert users.verify("alice", "old") is None
    entry = users.verify("alice", "new")
    assert entry is not None
    assert entry.groups == {"admins"}
    assert users.reload() is False  # unchanged


def test_a_broken_file_raises_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    write_atomic(path, [Entry("alice", _hash("pw").encode())])
    users = HtpasswdFile(path, check_interval=0)
    path.write_text("alice:{SHA}abc\n")
    with pytest.raises(HtpasswdError):
        users.reload()
    assert users.entry("alice") is not None  # the previous users stay


def test_passwords_longer_than_bcrypt_reads_are_checked_not_crashing(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    long = "p" * 72
    write_atomic(path, [Entry("alice", _hash(long).encode())])
    users = HtpasswdFile(path, check_interval=0)
    # bcrypt reads 72 bytes; bcrypt >= 5 raised ValueError (a 500) past them
    assert users.verify("alice", long + "ignored") is not None
    assert users.verify("alice", "q" * 200) is None
    assert users.verify("nobody", "x" * 10_000) is None
    assert users.verify("alice", "é" * 100) is None  # multi-byte characters count in bytes
