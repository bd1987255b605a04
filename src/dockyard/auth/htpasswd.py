"""The htpasswd file: bcrypt entries only, groups in a third field, reloaded when it changes.

Format, one user a line: `name:$2y$...bcrypt...[:group1,group2]` (the third field is what
nginx treats as a comment, so the file still works there). Lines starting with `#` and
blank lines are ignored. Any hash other than bcrypt (`$2a$`, `$2b$`, `$2y$`) is refused at
load, naming the line, because MD5-crypt, SHA1 and crypt(3) entries are cheap to crack.
A bcrypt entry that is malformed (truncated, bad cost, bad salt) is reported at load,
naming the line, and that user cannot log in; the others can. A user named like a policy
subject (`anonymous`, `authenticated`, `*`) is refused at load too, naming the line:
the file does not load (the server does not start; a reload keeps the previous users).
`dockyard user` reads such a file leniently, so that it can set the entry again or
remove it.

bcrypt reads at most 72 bytes of a password. As `htpasswd -B` does, only the first 72
bytes of the UTF-8 password count, when hashing and when checking.

Checking a bcrypt hash costs tens of milliseconds on purpose, so a successful check is
remembered for a short while under an HMAC of the credentials (never the password itself),
and the check itself runs in a thread.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from dockyard.auth.identity import RESERVED_WORDS, poses_as_subject
from dockyard.config.stamps import Stamp, file_stamps

log = logging.getLogger("dockyard.auth")

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
#: bcrypt reads this many bytes of a password; `htpasswd -B` drops the rest, and so do we
BCRYPT_MAX_BYTES = 72
#: the bcrypt cost `dockyard user` writes
DEFAULT_COST = 12

#: attempts found wrong remembered per process (`HtpasswdFile.known_wrong`), the oldest
#: forgotten first past it: 32 bytes and a float each
WRONG_KEPT = 10_000

_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})")
_B64 = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


@functools.cache
def _dummy_hash(rounds: int) -> bytes:
    """A hash to check against when the user does not exist, so timing does not tell:
    a fresh salt at `rounds` and a hash no password gives (checkpw costs the same
    whatever the stored hash is, and making one here would cost a second check)."""
    return bcrypt.gensalt(rounds=rounds) + b"." * 31


def dummy_cost(user: str, costs: Sequence[int], key: bytes) -> int:
    """The bcrypt cost to check an unknown `user` at: the cost of the entry a keyed hash
    of the name picks among `costs` (one per usable entry), so unknown names take the
    times real users take, in the same proportions, and one name always the same."""
    if not costs:
        return 12
    pick = hmac.new(key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return sorted(costs)[int.from_bytes(pick[:8], "big") % len(costs)]


def password_bytes(password: str) -> bytes:
    """What bcrypt hashes and checks: the first 72 bytes of the UTF-8 password, as
    `htpasswd -B` (apr_bcrypt) does; bcrypt itself refuses longer input."""
    return password.encode()[:BCRYPT_MAX_BYTES]


def bcrypt_problem(hashed: str) -> str:
    """Why `hashed` is not a usable bcrypt hash ("" when it is): checked at load, so a
    malformed entry never reaches bcrypt (which raises on it) at login."""
    m = _BCRYPT.fullmatch(hashed)
    if m is None:
        return "not `$2y$<cost 04-31>$` followed by 53 characters of bcrypt base64"
    # 22 characters carry the 16-byte salt and 31 the 23-byte hash: the spare low bits
    # of the last character are zero in every hash bcrypt writes (and it refuses others)
    if _B64.index(m.group(2)[-1]) & 0x0F or _B64.index(m.group(3)[-1]) & 0x03:
        return "its salt or hash is not canonical bcrypt base64"
    return ""


def cost(hashed: bytes) -> int:
    """The bcrypt cost of a hash (12, bcrypt's default, when it names none)."""
    try:
        return min(max(int(hashed[4:6]), 4), 31)
    except ValueError:
        return 12


class HtpasswdError(ValueError):
    """The file cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class Entry:
    user: str
    hash: bytes
    groups: frozenset[str] = frozenset()
    #: why this entry's hash is unusable ("" when it is fine): such a user cannot log in
    problem: str = ""

    @property
    def kind(self) -> str:
        """The kind of its hash, in words (`hash_kind`)."""
        return hash_kind(self.hash.decode())

    @property
    def refused(self) -> bool:
        """Whether the hash is of another kind than bcrypt: the server refuses the file."""
        return self.kind != "bcrypt"

    def line(self) -> str:
        groups = f":{','.join(sorted(self.groups))}" if self.groups else ""
        return f"{self.user}:{self.hash.decode()}{groups}"


def hash_kind(hashed: str) -> str:
    """`bcrypt`, or which other kind of hash an entry holds (for messages)."""
    return ("bcrypt" if hashed.startswith(BCRYPT_PREFIXES) else
            "MD5 (apr1)" if hashed.startswith("$apr1$") else
            "SHA1" if hashed.startswith("{SHA}") else
            "SHA-crypt" if hashed.startswith(("$5$", "$6$")) else
            "crypt(3) or plain text")


def valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 128 and set(name) <= _NAME_CHARS


def parse(text: str, source: str = "htpasswd", *, lenient: bool = False
          ) -> dict[str, Entry]:
    """Entries by user name; raise HtpasswdError on anything but bcrypt entries, and on
    a user named like a policy subject, unless `lenient` (`dockyard user`, which must be
    able to set such an entry again or remove it): then it is an entry with a problem,
    which cannot log in."""
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, rest = line.partition(":")
        if not sep or not user:
            raise HtpasswdError(f"{source}:{number}: not a `user:hash` line")
        reserved = ""
        if poses_as_subject(user):
            reserved = (f"{source}:{number}: user {user!r} is named like a policy subject "
                        f"({RESERVED_WORDS}), which would read as that subject: rename or "
                        f"remove the entry")
            if not lenient:
                raise HtpasswdError(reserved)
        hashed, _, groups = rest.partition(":")
        if (kind := hash_kind(hashed)) != "bcrypt":
            problem = (f"{source}:{number}: user {user!r} has a {kind} hash; only bcrypt "
                       f"entries are accepted (make them with `htpasswd -B` or `dockyard "
                       f"user passwd {user}`)")
            if not lenient:
                raise HtpasswdError(problem)
        elif problem := bcrypt_problem(hashed):
            problem = (f"{source}:{number}: user {user!r} has a malformed bcrypt hash "
                       f"({problem}); they cannot log in until it is set again "
                       f"(`dockyard user passwd {user}`)")
        entries[user] = Entry(user, hashed.encode(),
                              frozenset(g.strip() for g in groups.split(",") if g.strip()),
                              reserved or problem)
    return entries


def hash_password(password: str, rounds: int = DEFAULT_COST) -> bytes:
    """A bcrypt hash of the password's first 72 bytes (what `htpasswd -B` writes)."""
    return bcrypt.hashpw(password_bytes(password), bcrypt.gensalt(rounds=rounds))


def render(entries: Iterable[Entry]) -> str:
    return "".join(e.line() + "\n" for e in sorted(entries, key=lambda e: e.user))


def write_atomic(path: Path, entries: Iterable[Entry]) -> None:
    """Replace the file in one rename (mode 0600), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render(entries))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load(path: Path, *, lenient: bool = False) -> dict[str, Entry]:
    """The file's entries (`parse`); none when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise HtpasswdError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise HtpasswdError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse(text, str(path), lenient=lenient)


class HtpasswdFile:
    """The users of one htpasswd file, re-read when its size, mtime or inode change."""

    def __init__(self, path: Path, *, check_interval: float = 1.0,
                 cache_seconds: float = 300.0) -> None:
        self.path = path
        self.check_interval = check_interval
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._stamp: tuple[Stamp, ...] | None = None
        self._checked = 0.0
        self._entries: dict[str, Entry] = {}
        #: attempts found wrong, until when they are known so (`known_wrong`)
        self._wrong: OrderedDict[bytes, float] = OrderedDict()
        self._costs: tuple[int, ...] = ()
        self._dummy_key = b""
        self._key = secrets.token_bytes(32)
        self._ok: dict[bytes, float] = {}
        self.reload(force=True)

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file when it changed. A broken file raises at start, else is logged
        by the caller and the previous users stay in force."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return False
        self._checked = now
        stamp = file_stamps(self.path)
        if not force and stamp == self._stamp:
            return False
        entries = load(self.path)
        for entry in entries.values():
            if entry.problem:
                log.error("%s", entry.problem)
        with self._lock:
            usable = [e for e in entries.values() if not e.problem]
            self._costs = tuple(sorted(cost(e.hash) for e in usable))
            # a key every worker derives alike from what only the file's readers know
            # (its hashes), so one unknown name gets one cost on every worker
            self._dummy_key = hashlib.sha256(b"dockyard-dummy-cost\0" + b"\0".join(
                sorted(e.hash for e in usable))).digest()
            self._entries = entries
            self._stamp = stamp
            self._ok.clear()
            self._wrong.clear()  # a user added or a password changed may make one right
        return True

    def entry(self, user: str) -> Entry | None:
        return self._entries.get(user)

    def users(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.user)

    def _cache_key(self, user: str, password: str, entry: Entry) -> bytes:
        return hmac.new(self._key, b"\0".join([user.encode(), password.encode(), entry.hash]),
                        hashlib.sha256).digest()

    def dummy_cost(self, user: str) -> int:
        """The cost an unknown (or unusable) `user`'s password is checked at."""
        return dummy_cost(user, self._costs, self._dummy_key)

    def verify(self, user: str, password: str) -> Entry | None:
        """The user's entry when the password is right (blocking: call it in a thread)."""
        entry = self._entries.get(user)
        if entry is None or entry.problem:
            # as slow as a real user's check, so timing does not tell who exists
            bcrypt.checkpw(password_bytes(password), _dummy_hash(self.dummy_cost(user)))
            return None
        key = self._cache_key(user, password, entry)
        now = time.monotonic()
        expires = self._ok.get(key)
        if expires is not None and expires > now:
            return entry
        # bcrypt compares in constant time
        if bcrypt.checkpw(password_bytes(password), entry.hash):
            with self._lock:
                if len(self._ok) > 10000:
                    self._ok.clear()
                self._ok[key] = now + self.cache_seconds
            return entry
        return None

    def _attempt_key(self, client: str, user: str, password: str) -> bytes:
        return hmac.new(self._key, "\0".join([client, user, password]).encode(
            "utf-8", "surrogatepass"), hashlib.sha256).digest()

    def known_wrong(self, client: str, user: str, password: str) -> bool:
        """Whether this client sent this user name and password within the time
        `remember_wrong` was given, and they were found wrong (since the file was last
        read). Kept in this process only, so no hash of a wrong password (often one
        letter from the right one) is ever written to the database."""
        key = self._attempt_key(client, user, password)
        with self._lock:
            until = self._wrong.get(key)
            if until is not None and until < time.monotonic():
                del self._wrong[key]
                until = None
        return until is not None

    def remember_wrong(self, client: str, user: str, password: str, seconds: float) -> None:
        """Remember for `seconds` that this client's attempt was found wrong; past
        `WRONG_KEPT` attempts the oldest are forgotten."""
        key = self._attempt_key(client, user, password)
        with self._lock:
            self._wrong[key] = time.monotonic() + seconds
            while len(self._wrong) > WRONG_KEPT:
                self._wrong.popitem(last=False)

    def cached(self, user: str, password: str) -> Entry | None:
        """The entry when these credentials were checked recently (no bcrypt, no thread)."""
        entry = self._entries.get(user)
        if entry is None:
            return None
        expires = self._ok.get(self._cache_key(user, password, entry))
        return entry if expires is not None and expires > time.monotonic() else None
