"""The htpasswd file: bcrypt only, groups, reload on change, verification cache."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest

from dockyard.auth.htpasswd import (
    Entry,
    HtpasswdError,
    HtpasswdFile,
    hash_password,
    parse,
    write_atomic,
)


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


def _htpasswd_b(user: str, password: str) -> str:
    """An entry written by apache2-utils' `htpasswd -B` (the reference for long passwords)."""
    out = subprocess.run(["htpasswd", "-nbB", "-C", "4", user, password], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="apache2-utils not installed")
def test_long_passwords_count_72_bytes_as_htpasswd_b_does(tmp_path: Path) -> None:
    long = "a" * 72 + "b" * 8  # 80 bytes
    path = tmp_path / "htpasswd"
    path.write_text(_htpasswd_b("alice", long) + "\n"
                    + f"bob:{hash_password('é' * 40, rounds=4).decode()}\n")
    users = HtpasswdFile(path, check_interval=0)
    assert users.verify("alice", long) is not None
    # htpasswd -B hashed the first 72 bytes: what follows them does not count
    assert subprocess.run(["htpasswd", "-vb", str(path), "alice", "a" * 72 + "c" * 8],
                          capture_output=True).returncode == 0
    assert users.verify("alice", "a" * 72 + "c" * 8) is not None
    assert users.verify("alice", "a" * 71) is None
    # a password longer than 72 bytes never raises, for a known or an unknown user
    assert users.verify("alice", "x" * 200) is None
    assert users.verify("nobody", "x" * 200) is None
    # what `dockyard user` writes (hash_password) htpasswd reads the same way, even when
    # byte 72 falls inside a character
    assert subprocess.run(["htpasswd", "-vb", str(path), "bob", "é" * 40],
                          capture_output=True).returncode == 0
    assert users.verify("bob", "é" * 40) is not None
    assert users.verify("bob", "é" * 36) is not None  # the same 72 bytes


@pytest.mark.parametrize("hashed", [
    "$2y$", "$2y$05$garbage", "$2y$4$" + "a" * 53, "$2y$99$" + "O" * 53,
    "$2y$05$" + "a" * 52 + ".", "$2y$05$" + "O" * 54,
])
def test_a_malformed_bcrypt_entry_is_reported_and_cannot_log_in(
        tmp_path: Path, hashed: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{_hash('a')}\n# note\nmallory:{hashed}:admins\n")
    with caplog.at_level(logging.ERROR, "dockyard.auth"):
        users = HtpasswdFile(path, check_interval=0)
    assert f"{path}:3: user 'mallory' has a malformed bcrypt hash" in caplog.text
    assert users.verify("mallory", "anything") is None  # no ValueError from bcrypt
    assert users.verify("mallory", "x" * 100) is None
    assert users.verify("alice", "a") is not None  # the others still log in


def test_a_malformed_entry_survives_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("mallory:$2y$05$garbage\n")
    entries = parse(path.read_text())
    entries["alice"] = Entry("alice", _hash("a").encode())
    write_atomic(path, entries.values())
    assert "mallory:$2y$05$garbage\n" in path.read_text()


def _checked_costs(users: HtpasswdFile, names: list[str],
                   monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The bcrypt cost each name's (wrong) password was checked at."""
    seen: dict[str, int] = {}
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        seen[current] = int(hashed[4:6])
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    for current in names:
        assert users.verify(current, "wrong") is None
    monkeypatch.setattr(bcrypt, "checkpw", real)
    return seen


def test_unknown_users_are_checked_at_the_costs_real_users_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With mixed costs (htpasswd -B writes 5, `dockyard user` 12), an unknown name is
    checked at the cost of an entry a keyed hash of the name picks: not always the
    highest (which told who exists), the same for one name every time and on every
    worker, and the costs in the file's proportions."""
    path = tmp_path / "htpasswd"
    path.write_text("".join(
        f"u{i}:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=rounds)).decode()}\n"
        for i, rounds in enumerate([4, 4, 4, 5])))
    names = [f"nobody-{i}" for i in range(200)]
    first = _checked_costs(HtpasswdFile(path), names, monkeypatch)
    again = _checked_costs(HtpasswdFile(path), names, monkeypatch)  # another worker
    assert first == again
    assert set(first.values()) == {4, 5}
    assert 100 < list(first.values()).count(4) < 190  # three entries in four are cost 4
    assert _checked_costs(HtpasswdFile(path), ["u3"], monkeypatch) == {"u3": 5}
