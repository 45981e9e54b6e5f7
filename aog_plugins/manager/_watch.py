"""Notice changes in the plugins directory: file events from ``watchfiles`` (inotify on
Linux), or stat polling where events are unavailable. Either way a change is acted on only
once the relevant files have stopped changing, so a slow copy counts as one change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Literal

from aog_plugins.transport import start_thread

__all__ = ["WatchMode", "Watcher"]

_log = logging.getLogger("aog_plugins.manager")

WatchMode = Literal["events", "poll"]


class Watcher:
    """A thread that calls ``apply()`` after ``root`` changed and ``snapshot()`` (a cheap
    stat-based summary of what matters) stayed the same for ``settle`` seconds.

    ``mode="events"`` waits on file events and also applies every ``safety_interval``
    seconds (events can be lost, e.g. on inotify queue overflow); if events cannot be had
    (no watchfiles, no inotify) it falls back to polling every ``poll_interval``.
    """

    def __init__(
        self,
        root: Path,
        snapshot: Callable[[], Hashable],
        apply: Callable[[], None],
        *,
        mode: WatchMode = "events",
        settle: float = 0.3,
        poll_interval: float = 0.5,
        safety_interval: float = 10.0,
        max_settle: float = 10.0,
    ) -> None:
        self._root = root
        self._snapshot = snapshot
        self._apply = apply
        self.mode: WatchMode = mode
        self._settle = settle
        self._poll_interval = poll_interval
        self._safety_interval = safety_interval
        self._max_settle = max_settle
        self._stop = threading.Event()
        self._applied: Hashable = None
        self._thread = threading.Thread(target=self._run, name="aog-plugins-watch", daemon=True)

    def start(self, applied: Hashable) -> None:
        """Start watching; ``applied`` is the snapshot the caller has already acted on."""
        self._applied = applied
        start_thread(self._thread)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10.0)

    def _run(self) -> None:
        try:
            if self.mode == "events":
                try:
                    self._watch_events()
                except Exception as exc:
                    if self._stop.is_set():
                        return
                    _log.warning("file events unavailable for %s (%s); polling", self._root, exc)
                    self.mode = "poll"
            if self.mode == "poll":
                while not self._stop.wait(self._poll_interval):
                    if self._snapshot() != self._applied:
                        self._settle_and_apply()
        except Exception:
            _log.exception("the plugins directory watcher stopped")

    def _watch_events(self) -> None:
        # watchfiles' Rust backend (``watchfiles.watch()`` is a loop around it): its
        # constructor has the OS watch the tree before it returns, so the one comparison
        # below, made after that, covers every change since ``applied`` was taken. With
        # ``watch()`` the watch began inside its first iteration, and a change made in
        # between (a plugin added right after the manager opened) waited for the safety
        # rescan, 10 s.
        from watchfiles._rust_notify import RustNotify

        with RustNotify([str(self._root)], False, False, 300, True, True) as notify:
            if self._snapshot() != self._applied:
                self._settle_and_apply()
            while not self._stop.is_set():
                outcome = notify.watch(400, 50, int(self._safety_interval * 1000), self._stop)
                if outcome == "stop" or self._stop.is_set():
                    return
                # Changes, or a timeout (the periodic safety rescan), or "signal" (only the
                # main thread gets those; not this one): look at the directory either way.
                self._settle_and_apply()

    def _settle_and_apply(self) -> None:
        """Wait until the snapshot holds still for ``settle`` s (bounded), then apply."""
        limit = time.monotonic() + self._max_settle
        before = self._snapshot()
        while time.monotonic() < limit:
            if self._stop.wait(self._settle):
                return
            now = self._snapshot()
            if now == before:
                break
            before = now
        if self._stop.is_set():
            return
        self._apply()
        self._applied = before
