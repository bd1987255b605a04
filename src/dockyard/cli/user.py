"""`dockyard user add|passwd|rm|ls`: maintain the htpasswd file (bcrypt entries, groups).

The file is `--file`, else `auth.htpasswd.path` from `--config`. Passwords come from a
prompt (asked twice; without a terminal, the first two lines of standard input) or,
with `--password-stdin`, from the first line of standard input; never from the command
line, where other users could read them. A running server picks the change up within a
second, without a restart. As with `htpasswd -B`, only the first 72 bytes of a password
count (bcrypt's limit); a longer one is accepted with a warning.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import click

from dockyard.auth.htpasswd import (
    BCRYPT_MAX_BYTES,
    DEFAULT_COST,
    Entry,
    HtpasswdError,
    cost,
    hash_password,
    load,
    valid_name,
    write_atomic,
)
from dockyard.auth.identity import RESERVED_WORDS, poses_as_subject
from dockyard.cli.common import config_option
from dockyard.cli.common import load as load_config

file_option = click.option("--file", "file", type=click.Path(path_type=Path, dir_okay=False),
                           help="The htpasswd file (default: auth.htpasswd.path).")
stdin_option = click.option("--password-stdin", is_flag=True,
                            help="Read the password from the first line of stdin.")


def _path(config: Path | None, file: Path | None) -> Path:
    if file is not None:
        return file
    path = load_config(config, {}).auth.htpasswd.path
    if path is None:
        raise click.UsageError("no htpasswd file: pass --file or set auth.htpasswd.path")
    return path


def _entries(path: Path) -> dict[str, Entry]:
    """The file's entries, a user named like a policy subject or with a hash of another
    kind than bcrypt included (the server refuses such a file; `passwd` or `rm` is how
    to mend it)."""
    try:
        return load(path, lenient=True)
    except HtpasswdError as exc:
        raise click.ClickException(str(exc)) from None


def _refused(entries: Iterable[Entry], *, as_error: bool = False) -> bool:
    """Say on stderr which entries still have a hash the server refuses; whether any."""
    refused = [e for e in entries if e.refused]
    for entry in refused:
        click.echo(f"{'error' if as_error else 'warning'}: {entry.problem}", err=True)
    return bool(refused)


def _not_a_subject(name: str, hint: str = "") -> None:
    """A usage error (exit 2) when `name` is a policy subject rather than a user name."""
    if poses_as_subject(name):
        raise click.UsageError(f"{name!r} is a policy subject, not a user name (no user may "
                               f"be called {RESERVED_WORDS}){hint}")


def save(path: Path, entries: Iterable[Entry]) -> None:
    """Write the file; one line (exit 1) when it cannot be (a folder missing, no right)."""
    try:
        write_atomic(path, entries)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        try:
            password = sys.stdin.buffer.readline().decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise click.UsageError("the password on standard input is not UTF-8 text"
                                   ) from None
    else:
        password = _prompted()
    if not password:
        raise click.UsageError("the password must not be empty")
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        click.echo(f"warning: only the first {BCRYPT_MAX_BYTES} bytes of the password count "
                   f"(bcrypt's limit, as with htpasswd -B)", err=True)
    return password


def _prompted() -> str:
    """The password asked twice at the terminal; without one (a pipe), its first two
    lines, with no prompt and none of getpass's warnings. Standard input ended before
    them, or two that differ, is a usage error (exit 2), not "Aborted!" (exit 1)."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    try:
        first, again = (sys.stdin.buffer.readline().decode("utf-8") for _ in range(2))
    except UnicodeDecodeError:
        raise click.UsageError("the password on standard input is not UTF-8 text") from None
    if not again:
        raise click.UsageError("standard input is no terminal and ended before the password "
                               "was given twice (pipe it once with --password-stdin)")
    if first.rstrip("\r\n") != again.rstrip("\r\n"):
        raise click.UsageError("the two passwords on standard input differ")
    return first.rstrip("\r\n")


def _groups(values: tuple[str, ...]) -> frozenset[str]:
    out = frozenset(g.strip() for v in values for g in v.split(",") if g.strip())
    bad = [g for g in out if not valid_name(g)]
    if bad:
        raise click.UsageError(f"invalid group name(s): {', '.join(sorted(bad))}")
    return out


@click.group()
def user() -> None:
    """Manage the users of the htpasswd file."""


@user.command("add")
@config_option
@file_option
@stdin_option
@click.option("--group", "-g", "groups", multiple=True, help="Group (repeat or a,b).")
@click.argument("name")
def add(config: Path | None, file: Path | None, password_stdin: bool, groups: tuple[str, ...],
        name: str) -> None:
    """Add user NAME."""
    path = _path(config, file)
    _not_a_subject(name)
    if not valid_name(name):
        raise click.UsageError("user names are letters, digits and . _ - @")
    entries = _entries(path)
    if name in entries:
        raise click.ClickException(f"user {name} exists (use `dockyard user passwd`)")
    entries[name] = Entry(name, hash_password(_password(password_stdin)), _groups(groups))
    save(path, entries.values())
    click.echo(f"added {name} to {path}")
    _refused(entries.values())


@user.command("passwd")
@config_option
@file_option
@stdin_option
@click.option("--group", "-g", "groups", multiple=True,
              help="Replace the user's groups (repeat or a,b).")
@click.argument("name")
def passwd(config: Path | None, file: Path | None, password_stdin: bool,
           groups: tuple[str, ...], name: str) -> None:
    """Set the password (and with --group the groups) of user NAME."""
    path = _path(config, file)
    _not_a_subject(name, ": remove it with `dockyard user rm`")
    entries = _entries(path)
    old = entries.get(name)
    if old is None:
        raise click.ClickException(f"no user {name} in {path}")
    entries[name] = Entry(name, hash_password(_password(password_stdin)),
                          _groups(groups) if groups else old.groups)
    save(path, entries.values())
    click.echo(f"changed {name} in {path}")
    _refused(entries.values())


@user.command("rm")
@config_option
@file_option
@click.argument("name")
def rm(config: Path | None, file: Path | None, name: str) -> None:
    """Remove user NAME."""
    path = _path(config, file)
    entries = _entries(path)
    if entries.pop(name, None) is None:
        raise click.ClickException(f"no user {name} in {path}")
    save(path, entries.values())
    click.echo(f"removed {name} from {path}")
    _refused(entries.values())


@user.command("ls")
@config_option
@file_option
def ls(config: Path | None, file: Path | None) -> None:
    """List users and their groups; warn when the entries' bcrypt costs differ; exit 1
    when an entry's hash is of a kind the server refuses."""
    by_cost: dict[int, list[str]] = {}
    entries = _entries(_path(config, file))
    for entry in sorted(entries.values(), key=lambda e: e.user):
        note = ("\t(named like a policy subject: cannot log in; the server refuses the "
                "file until it is removed)" if poses_as_subject(entry.user)
                else f"\t({entry.kind} hash: the server refuses the file until it is "
                "set again or removed)" if entry.refused
                else "\t(malformed hash: cannot log in)" if entry.problem else "")
        click.echo(f"{entry.user}\t{','.join(sorted(entry.groups))}{note}")
        if not entry.problem:
            by_cost.setdefault(cost(entry.hash), []).append(entry.user)
    if len(by_cost) > 1:
        costs = "; ".join(f"cost {c}: {', '.join(users)}" for c, users in sorted(by_cost.items()))
        click.echo(f"warning: the entries use different bcrypt costs ({costs}); the cheaper "
                   f"ones are quicker to crack: set them again with `dockyard user passwd` "
                   f"(cost {DEFAULT_COST})", err=True)
    if _refused(entries.values(), as_error=True):
        raise SystemExit(1)
