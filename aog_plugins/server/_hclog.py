"""Logging for Python plugins in hclog's JSON line format, which go-plugin hosts (and ours)
parse from the plugin's stderr into leveled log records."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
import threading
from typing import IO

__all__ = ["HclogFormatter", "configure_logging"]

TRACE = 5
_LEVELS = ((logging.ERROR, "error"), (logging.WARNING, "warn"), (logging.INFO, "info"))
# A str holds a lone surrogate only when it came from bytes that were not UTF-8 (os.fsdecode,
# os.listdir, sys.argv): no UTF-8 stream can write it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _level_name(levelno: int) -> str:
    for threshold, name in _LEVELS:
        if levelno >= threshold:
            return name
    return "debug" if levelno > TRACE else "trace"


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class HclogFormatter(logging.Formatter):
    """One JSON object per record: ``@level``, ``@message``, ``@module``, ``@timestamp``,
    then the record's ``extra`` fields as key/values (the way hclog writes them)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        doc: dict[str, object] = {
            "@level": _level_name(record.levelno),
            "@message": record.getMessage(),
            "@module": record.name,
            "@timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = _jsonable(value)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        line = json.dumps(doc, ensure_ascii=False)
        # As Go's encoder does with bytes that are not UTF-8: U+FFFD, not a lost record.
        return line if line.isascii() else _LONE_SURROGATE.sub("\ufffd", line)


def configure_logging(level: int = logging.DEBUG, stream: IO[str] | None = None) -> logging.Handler:
    """Send the root logger's records as hclog JSON to the plugin's real stderr.

    Called by :func:`aog_plugins.server.serve` before stderr is redirected to GRPCStdio, so
    logs keep going where the host parses them. Returns the installed handler.
    """
    if stream is None:
        # A private dup of fd 2: later changes to sys.stderr do not affect logging.
        # hclog lines are UTF-8 whatever the locale says (an ASCII one would lose every
        # record with a character beyond it).
        fd = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
        stream = os.fdopen(fd, "w", 1, encoding="utf-8", errors="backslashreplace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(HclogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def log_thread_failures() -> None:
    """Log an exception that ends one of the plugin's threads as an ERROR record (hclog,
    on the real stderr), as a Go host shows a goroutine's panic. Python only prints it to
    sys.stderr, which goes to GRPCStdio, and go-plugin's host discards that unless told
    otherwise: the failure was invisible there. Left alone when the plugin has set a
    hook of its own."""
    if threading.excepthook is not threading.__excepthook__:
        return
    log = logging.getLogger("aog_plugins.server")

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        log.error("uncaught exception in thread %s", name, exc_info=exc_info)  # type: ignore[arg-type]

    threading.excepthook = hook
