"""`dockyard user add|passwd|rm|ls` maintain the htpasswd file."""

from __future__ import annotations

from pathlib import Path

import bcrypt
from click.testing import CliRunner

from dockyard.auth.htpasswd import HtpasswdFile
from dockyard.cli.main import main


def test_user_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    run = CliRunner().invoke
    r = run(main, ["user", "add", "--file", str(path), "--password-stdin", "-g", "admins,ops",
                   "alice"], input="s3cret\n")
    assert r.exit_code == 0, r.output
    assert "s3cret" not in path.read_text()
    assert path.read_text().startswith("alice:$2b$")
    r = run(main, ["user", "add", "--file", str(path), "--password-stdin", "alice"],
            input="x\n")
    assert r.exit_code == 1
    assert "exists" in r.output
    r = run(main, ["user", "add", "--file", str(path), "bob"], input="pw\npw\n")
    assert r.exit_code == 0, r.output
    r = run(main, ["user", "ls", "--file", str(path)])
    assert r.output.splitlines() == ["alice\tadmins,ops", "bob\t"]
    users = HtpasswdFile(path)
    entry = users.verify("alice", "s3cret")
    assert entry is not None
    assert entry.groups == {"admins", "ops"}

    r = run(main, ["user", "passwd", "--file", str(path), "--password-stdin", "alice"],
            input="n3w\n")
    assert r.exit_code == 0, r.output
    users = HtpasswdFile(path)
    assert users.verify("alice", "s3cret") is None
    entry = users.verify("alice", "n3w")
    assert entry is not None
    assert entry.groups == {"admins", "ops"}

    assert run(main, ["user", "rm", "--file", str(path), "bob"]).exit_code == 0
    assert run(main, ["user", "rm", "--file", str(path), "bob"]).exit_code == 1
    assert run(main, ["user", "ls", "--file", str(path)]).output == "alice\tadmins,ops\n"


def test_user_file_from_config_and_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "users"
    config = tmp_path / "config.yml"
    config.write_text(f"auth:\n  method: htpasswd\n  htpasswd:\n    path: {path}\n")
    run = CliRunner().invoke
    r = run(main, ["user", "add", "--config", str(config), "--password-stdin", "carol"],
            input="pw\n")
    assert r.exit_code == 0, r.output
    assert path.read_text().startswith("carol:")
    assert run(main, ["user", "add", "--file", str(path), "--password-stdin", "bad:name"],
               input="pw\n").exit_code == 2
    assert run(main, ["user", "add", "--file", str(path), "--password-stdin", "dave"],
               input="\n").exit_code == 2
    assert run(main, ["user", "ls"]).exit_code == 2  # no file anywhere
    path.write_text("eve:$apr1$x$y\n")
    r = run(main, ["user", "ls", "--file", str(path)])
    assert r.exit_code == 1
    assert "bcrypt" in r.output


def test_long_passwords_and_malformed_entries(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    run = CliRunner().invoke
    long = "p" * 72 + "-ignored"
    r = run(main, ["user", "add", "--file", str(path), "--password-stdin", "alice"],
            input=long + "\n")
    assert r.exit_code == 0, r.output
    assert "only the first 72 bytes of the password count" in r.output
    users = HtpasswdFile(path)
    assert users.verify("alice", long) is not None
    assert users.verify("alice", "p" * 72) is not None  # as htpasswd -B would have it
    # a malformed entry is listed as such, kept by other edits, and fixed by passwd
    path.write_text(path.read_text() + "mallory:$2y$05$garbage\n")
    r = run(main, ["user", "ls", "--file", str(path)])
    assert r.output.splitlines() == ["alice\t", "mallory\t\t(malformed hash: cannot log in)"]
    r = run(main, ["user", "add", "--file", str(path), "--password-stdin", "bob"],
            input="b\n")
    assert r.exit_code == 0, r.output
    assert "mallory:$2y$05$garbage" in path.read_text()
    r = run(main, ["user", "passwd", "--file", str(path), "--password-stdin", "mallory"],
            input="m\n")
    assert r.exit_code == 0, r.output
    assert HtpasswdFile(path).verify("mallory", "m") is not None


def test_a_file_that_cannot_be_written_or_read_is_one_line(tmp_path: Path) -> None:
    run = CliRunner().invoke
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = run(main, ["user", "add", "--file", str(blocker / "htpasswd"), "--password-stdin",
                   "alice"], input="pw\n")
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"Error: cannot read {blocker / 'htpasswd'}: Not a directory"]
    latin = tmp_path / "latin1"
    latin.write_bytes(b"caf\xe9:$2y$05$x\n")
    r = run(main, ["user", "ls", "--file", str(latin)])
    assert r.exit_code == 1
    assert r.output.strip() == f"Error: {latin}: not UTF-8 text (byte 3)"


def test_ls_warns_about_mixed_bcrypt_costs(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    cheap = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=5)).decode()
    dear = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=6)).decode()
    path.write_text(f"alice:{cheap}\nbob:{dear}:ops\ncarol:{cheap}\n")
    r = CliRunner().invoke(main, ["user", "ls", "--file", str(path)])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["alice\t", "bob\tops", "carol\t"]
    assert "cost 5: alice, carol; cost 6: bob" in r.stderr
    assert "dockyard user passwd" in r.stderr
    path.write_text(f"alice:{cheap}\ncarol:{cheap}\n")
    r = CliRunner().invoke(main, ["user", "ls", "--file", str(path)])
    assert r.stderr == ""


def test_names_that_are_policy_subjects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    for name in ("anonymous", "authenticated", "group:admins"):
        r = CliRunner().invoke(main, ["user", "add", "--file", str(path), "--password-stdin",
                                      name], input="pw\n")
        assert r.exit_code == 2, r.output
    assert not path.exists()


def test_an_entry_of_another_hash_kind_is_mended_with_passwd_or_rm(tmp_path: Path) -> None:
    # the server refuses such a file and tells to use `dockyard user passwd`: it must work
    path = tmp_path / "htpasswd"
    run = CliRunner().invoke
    r = run(main, ["user", "add", "--file", str(path), "--password-stdin", "alice"],
            input="a\n")
    assert r.exit_code == 0, r.output
    path.write_text(path.read_text() + "eve:$apr1$x$y:ops\nold:{SHA}abc\n")
    r = run(main, ["user", "ls", "--file", str(path)])
    assert r.exit_code == 1
    assert r.stdout.splitlines() == [
        "alice\t",
        "eve\tops\t(MD5 (apr1) hash: the server refuses the file until it is set again "
        "or removed)",
        "old\t\t(SHA1 hash: the server refuses the file until it is set again or removed)"]
    assert "user 'eve' has a MD5 (apr1) hash; only bcrypt entries" in r.stderr
    r = run(main, ["user", "passwd", "--file", str(path), "--password-stdin", "eve"],
            input="e\n")
    assert r.exit_code == 0, r.output
    assert "user 'old' has a SHA1 hash" in r.stderr  # still there: the file is refused
    r = run(main, ["user", "rm", "--file", str(path), "old"])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    users = HtpasswdFile(path)  # the server's reading: loads again
    entry = users.verify("eve", "e")
    assert entry is not None
    assert entry.groups == {"ops"}
    assert users.verify("alice", "a") is not None
    r = run(main, ["user", "ls", "--file", str(path)])
    assert (r.exit_code, r.stdout) == (0, "alice\t\neve\tops\n")
