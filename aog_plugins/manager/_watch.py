"""Notice changes in the plugins directory: file events from ``watchfiles`` (inotify on
Linux), or stat polling where events are unavailable. Either way a change is acted on only
once the relevant files have stopped changing, so a slow copy counts as one change.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Literal, Protocol

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

    The events come from ``root``, its immediate subdirectories and the directories
    ``extra_dirs()`` names, each watched on its own, never a whole tree: a recursive watch
    follows symlinks, and a plugin folder holding a link to ``/usr`` cost ~17,000 inotify
    watches (one to ``/`` could take the user's whole inotify limit, breaking file events
    for every other program of that user). The set is rebuilt when it changes.
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
        extra_dirs: Callable[[], Iterable[Path]] = tuple,
    ) -> None:
        self._root = root
        self._extra_dirs = extra_dirs
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
                    self._catch_up()
        except Exception:
            _log.exception("the plugins directory watcher stopped")

    def _watch_events(self) -> None:
        # watchfiles' Rust backend (``watchfiles.watch()`` is a loop around it): its
        # constructor has the OS watch the tree before it returns, so the one comparison
        # after it covers every change since ``applied`` was taken. With ``watch()`` the
        # watch began inside its first iteration, and a change made in between (a plugin
        # added right after the manager opened) waited for the safety rescan, 10 s.
        from watchfiles._rust_notify import RustNotify

        while not self._stop.is_set():
            targets = self._targets()
            if not targets:  # gone: wait for it to come back (a redeploy), then watch it
                self._catch_up()
                if self._stop.wait(self._poll_interval):
                    return
                continue
            try:
                # Not recursive (see the class); permission-denied ones are skipped.
                notify = RustNotify([path for path, _ in targets], False, False, 300, False, True)
            except FileNotFoundError:
                if self._stop.wait(0.05):  # one was removed meanwhile: look again
                    return
                continue
            with notify:
                self._catch_up()
                self._follow(notify, targets)

    def _targets(self) -> tuple[tuple[str, tuple[int, int]], ...]:
        """The directories to watch, with their (device, inode): the root, its immediate
        subdirectories (not hidden) and ``extra_dirs()``, those that exist. Empty when
        the root is gone."""
        root = _identity(self._root)
        if root is None:
            return ()
        found = {str(self._root): root}
        try:
            names = [
                name
                for name in os.listdir(self._root)
                if not name.startswith(".") and _utf8(name)  # watchfiles takes UTF-8 only
            ]
        except OSError:
            names = []
        for path in [*(self._root / name for name in names), *self._extra_dirs()]:
            identity = _identity(path)
            if identity is not None:
                found[str(path)] = identity
        return tuple(sorted(found.items()))

    def _follow(self, notify: _Notify, targets: tuple[tuple[str, tuple[int, int]], ...]) -> None:
        """Apply on file events and at every safety rescan, until stopped or until the
        directories to watch are no longer the ones watched. OS watches follow a
        directory, not its path: one removed and made again (or a symlink to it switched
        to another), or a plugin folder added, would otherwise go unwatched; the check is
        a listing and a stat per directory every ``poll_interval``."""
        rescan_at = time.monotonic() + self._safety_interval
        while not self._stop.is_set():
            outcome = notify.watch(400, 50, int(self._poll_interval * 1000), self._stop)
            if outcome == "stop" or self._stop.is_set():
                return
            # Changes, or a timeout, or "signal" (only the main thread gets those).
            if outcome != "timeout" or time.monotonic() >= rescan_at:
                self._settle_and_apply()
                rescan_at = time.monotonic() + self._safety_interval
            if self._targets() != targets:
                return

    def _catch_up(self) -> None:
        """Apply if the directory differs from what was applied last."""
        if self._snapshot() != self._applied:
            self._settle_and_apply()

    def _settle_and_apply(self) -> None:
        """:meth:`_settle_then_apply`; a failure is logged and retried at the next wake-up
        (a passing error must not end hot-plugging for good)."""
        try:
            self._settle_then_apply()
        except Exception:
            _log.exception("applying a change of the plugins directory %s failed", self._root)

    def _settle_then_apply(self) -> None:
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


class _Notify(Protocol):
    def watch(
        self, debounce_ms: int, step_ms: int, timeout_ms: int, stop_event: threading.Event
    ) -> object: ...


def _utf8(name: str) -> bool:
    """Whether ``name`` is valid UTF-8 (not a file name's undecodable bytes, escaped)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory at ``path`` (symlinks followed); None if none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
