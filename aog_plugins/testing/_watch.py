"""What a harness keeps about each plugin it started: log records, events, pids, socket
dirs; and the report text a failing test shows."""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from aog_plugins.process import Plugin, PluginEvent

__all__ = ["PluginWatch", "RecordBuffer", "describe_exit"]

MAX_RECORDS = 500
MAX_EVENTS = 50
_SOCKET_DIR_ENV = "PLUGIN_UNIX_SOCKET_DIR"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} ({code})"
        except ValueError:
            return f"killed by signal {-code} ({code})"
    return f"exit code {code}"


def _stamp(created: float) -> str:
    return datetime.fromtimestamp(created).strftime("%H:%M:%S.%f")[:-3]


class RecordBuffer(logging.Handler):
    """Keeps the last log records of one plugin as text (and appends them to a file).

    A file that cannot be written (a full disk) is given up, saying why in ``file_error``:
    the records go on into memory, and the plugin's events and logging are not disturbed.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.lines: collections.deque[str] = collections.deque(maxlen=MAX_RECORDS)
        self.dropped = 0
        self.file_error: str | None = None
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{_stamp(record.created)} {record.levelname:<7} {record.getMessage()}"
        except Exception:
            self.handleError(record)
            return
        # handle() holds the handler's lock around emit().
        if len(self.lines) == self.lines.maxlen:
            self.dropped += 1
        self.lines.append(text)
        if self._file is not None:
            try:
                self._file.write(text + "\n")
                self._file.flush()
            except OSError as exc:
                self._give_up_file(exc)

    def _give_up_file(self, exc: OSError) -> None:
        file, self._file = self._file, None
        if self.file_error is None:
            self.file_error = f"{getattr(file, 'name', '?')}: {exc.strerror or exc}"
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def close(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self._file is not None:
                try:
                    self._file.close()
                    self._file = None
                except OSError as exc:
                    self._give_up_file(exc)
        super().close()


@dataclass
class PluginWatch:
    """One plugin started by a harness, and everything needed to check and report on it."""

    name: str
    marker: str
    logger: logging.Logger
    records: RecordBuffer
    plugin: Plugin | None = None
    log_path: str | None = None
    pids: list[int] = field(default_factory=list)
    socket_dirs: set[str] = field(default_factory=set)
    events: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_EVENTS)
    )
    leaks: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw_process(self, pid: int | None) -> None:
        """Remember a pid (its group) and its socket dir, read from its environment."""
        if pid is None:
            return
        with self.lock:
            if pid in self.pids:
                return
            self.pids.append(pid)
        try:
            directory = psutil.Process(pid).environ().get(_SOCKET_DIR_ENV)
        except (psutil.Error, OSError):
            directory = None
        if directory:
            with self.lock:
                self.socket_dirs.add(directory)

    def on_event(self, event: PluginEvent) -> None:
        line = f"{event.old.value} -> {event.new.value}: {event.reason}"
        if event.exit_code is not None:
            line += f" [{describe_exit(event.exit_code)}]"
        with self.lock:
            self.events.append(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} {line}")
        if event.new.value == "RUNNING":
            self.saw_process(event.pid)

    def title(self) -> str:
        pids = ", ".join(str(p) for p in self.pids) or "none"
        return f"aog plugin {self.name} (pids {pids})"

    def report(self, *, records: bool = True) -> str:
        """State, exit code, events, log records and stderr tail, as one text block."""
        plugin = self.plugin
        parts: list[str] = []
        if plugin is None:
            parts.append("did not start")
        else:
            parts.append(f"state {plugin.state.value}, {describe_exit(plugin.exit_code)}")
        if self.records.file_error:
            parts.append(f"log file not written: {self.records.file_error}")
        if self.leaks:
            parts.append("left behind:\n" + "\n".join(f"  {leak}" for leak in self.leaks))
        with self.lock:
            events = list(self.events)
        if events:
            parts.append("--- events ---\n" + "\n".join(events))
        lines = list(self.records.lines) if records else []
        if lines:
            head = "--- log records"
            if self.records.dropped:
                head += f" (last {len(lines)}, {self.records.dropped} earlier dropped)"
            parts.append(head + " ---\n" + "\n".join(lines))
        if plugin is not None:
            tail = plugin.stderr_tail().strip()
            if tail:
                parts.append("--- stderr (last lines of the current process) ---\n" + tail)
        return "\n".join(parts) + "\n"
