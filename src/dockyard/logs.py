"""Logging setup: text lines, or with `log.format: json` one JSON object per line.

Each request gets an id (`request_id()`: this process's random prefix and a counter,
or the `X-Request-Id` a trusted proxy sent), held in a context variable for the
request's task, so every line logged while it runs carries it, and returned to the
client in the `X-Request-Id` header. The access log (`log.accesslog`) in JSON names the
request id, user, repository, method, route, status, bytes and duration as fields.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import sys
import time
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

MAX_INCOMING = 128
"""Longest `X-Request-Id` taken from a proxy (a longer or unprintable one is replaced)."""

#: attributes of every LogRecord: anything else was passed with `extra=` and is a field
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


#: this process's request ids are `PREFIX + str(next(COUNTER))` (inlined where every
#: request pays for it): its pid and random bytes, then a counter; new after a fork
PREFIX = ""
COUNTER = itertools.count(1)


def _new_ids() -> None:
    global PREFIX, COUNTER
    PREFIX = f"{os.getpid():x}{os.urandom(3).hex()}-"
    COUNTER = itertools.count(1)


_new_ids()
os.register_at_fork(after_in_child=_new_ids)


def request_id(incoming: str | None = None) -> str:
    """The id of a new request: `incoming` (from a trusted proxy) when usable, else a
    fresh one."""
    if incoming and len(incoming) <= MAX_INCOMING and incoming.isascii() \
            and incoming.isprintable():
        return incoming
    return PREFIX + str(next(COUNTER))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, request id, and the
    record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = REQUEST_ID.get()
        if rid:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Root logging to stderr in `fmt` (`text` or `json`) at `level`; replaces earlier
    handlers (a SIGHUP may change the level)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    # what no format here shows is not gathered for each record (the logging HOWTO's
    # "Optimization"): caller's file and line, thread and multiprocessing names
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
