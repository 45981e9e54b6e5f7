"""Hot-plug while the host runs: new (also slowly copied or renamed-in), removed and
replaced plugins, with calls flowing the whole time."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from aog_plugins import GRPCProviderClient, PluginManager, PluginState
from aog_plugins.errors import (
    AogPluginsError,
    ExecutableNotExecutableError,
    InvalidManifestError,
    PluginCallError,
    PluginExitedError,
    PluginRemovedError,
)
from aog_plugins.manager import EntryState
from aog_plugins.manager._watch import Watcher
from tests.manager.conftest import (
    BIN_DIR,
    EventLog,
    Layout,
    manifest_doc,
    wrapper_script,
    write_atomic,
)
from tests.support.leaks import LeakCheck
from tests.support.wait import wait_until

WATCH_MODES = [pytest.param(True, id="events"), pytest.param("poll", id="poll")]


@pytest.fixture(autouse=True)
def _events_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No periodic safety rescan (10 s) in these tests: a change must be seen through its
    file events (or the poll), not picked up by the rescan after a miss."""
    defaults = Watcher.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "safety_interval", 3600.0)


class Caller:
    """Threads calling a plugin back to back, recording every reply and failure."""

    def __init__(self, client: GRPCProviderClient, service: str, request: bytes) -> None:
        self.client = client
        self.service = service
        self.request = request
        self.replies: list[bytes] = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(3)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.client.invoke_service(self.service, self.request, timeout=30)
            except AogPluginsError as exc:
                with self._lock:
                    self.failures.append(exc)
            else:
                with self._lock:
                    self.replies.append(reply)

    def count(self) -> int:
        with self._lock:
            return len(self.replies)

    def last(self) -> bytes:
        with self._lock:
            return self.replies[-1]

    def __enter__(self) -> Caller:
        for t in self._threads:
            t.start()
        wait_until(lambda: self.count() > 5, 30.0, "calls to flow")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pid_of(reply: bytes) -> int:
    value = json.loads(reply)["pid"]
    assert isinstance(value, int)
    return value


@contextmanager
def managed(
    layout: Layout,
    leaks: LeakCheck,
    watch: bool | str,
    drain_timeout: float = 30.0,
    *,
    eager: bool = False,
) -> Iterator[tuple[PluginManager, EventLog]]:
    events = EventLog()
    manager = PluginManager(
        layout.root,
        watch=watch,
        eager=eager,
        env=leaks.env,
        on_event=events,
        drain_timeout=drain_timeout,
    )
    try:
        yield manager, events
    finally:
        manager.close()


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_new_plugin_is_listed_and_usable(
    layout: Layout, leaks: LeakCheck, watch: bool | str
) -> None:
    layout.add("first")
    with managed(layout, leaks, watch) as (manager, events):
        layout.add("second")
        added = events.wait("added", "second")
        assert added.error is None
        assert [e.name for e in manager.entries()] == ["first", "second"]
        assert pid_of(manager.client("second").invoke_service("chat", b"{}")) > 0


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_plugin_added_while_the_manager_opens_is_picked_up(
    layout: Layout, leaks: LeakCheck, watch: bool | str, tmp_path: Path
) -> None:
    # The first plugin, started eagerly while the manager opens, moves the second one in:
    # after the first scan, before the watcher runs.
    staging = tmp_path / "staging"
    layout.add("late", into=staging)
    layout.add("first", wrapper_lines=[f'mv "{staging / "late"}" "{layout.root}/"'])
    with managed(layout, leaks, watch, eager=True) as (_manager, events):
        assert (layout.root / "late").is_dir()
        assert events.wait("added", "late").error is None


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_plugins_directory_removed_and_made_again_is_watched_again(
    layout: Layout, leaks: LeakCheck, watch: bool | str
) -> None:
    # A redeploy that replaces the whole directory: the OS watch followed the old one.
    layout.add("first")
    with managed(layout, leaks, watch) as (manager, events):
        shutil.rmtree(layout.root)
        events.wait("removed", "first")
        layout.root.mkdir()
        layout.add("second")
        assert events.wait("added", "second").error is None
        assert [e.name for e in manager.entries()] == ["second"]


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_switched_symlink_is_followed(
    layout: Layout, leaks: LeakCheck, watch: bool | str, tmp_path: Path
) -> None:
    # The plugins directory is a symlink, switched atomically to another release.
    old, new = tmp_path / "release-1", tmp_path / "release-2"
    layout.add("first", into=old)
    layout.add("second", into=new)
    link = tmp_path / "current"
    link.symlink_to(old)
    with managed(Layout(link), leaks, watch) as (manager, events):
        assert [e.name for e in manager.entries()] == ["first"]
        staged = tmp_path / "current.new"
        staged.symlink_to(new)
        os.replace(staged, link)
        assert events.wait("added", "second").error is None
        events.wait("removed", "first")
        assert [e.name for e in manager.entries()] == ["second"]


def _inotify_watches() -> int:
    """How many inotify watches this process holds (every inotify instance's)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                count += sum(1 for line in info if line.startswith("inotify wd:"))
        except OSError:
            continue  # closed meanwhile
    return count


def test_a_symlink_in_a_plugin_folder_is_not_watched_through(
    layout: Layout, leaks: LeakCheck, tmp_path: Path
) -> None:
    # The watch was recursive, and a recursive watch follows symlinks: a plugin folder
    # linking to /usr cost ~17,000 inotify watches; one linking to / could take the
    # user's whole inotify limit (file events then fail for every program of the user).
    elsewhere = tmp_path / "elsewhere"
    for i in range(300):
        (elsewhere / f"d{i}").mkdir(parents=True)
    (layout.add("first") / "data").symlink_to(elsewhere)
    before = _inotify_watches()
    with managed(layout, leaks, True) as (_manager, events):
        wait_until(lambda: _inotify_watches() > before, 10, "the watch to be set up")
        time.sleep(0.5)  # room for more watches to show up
        assert _inotify_watches() - before < 20
        layout.add("second")  # and hot-plug still works
        assert events.wait("added", "second").error is None


def test_a_folder_name_that_is_not_utf8_does_not_end_file_events(
    layout: Layout, leaks: LeakCheck
) -> None:
    # watchfiles refused the whole watch for one such name anywhere in the tree, and the
    # manager fell back to polling for good.
    os.mkdir(os.path.join(os.fsencode(layout.root), b"caf\xe9"))
    with managed(layout, leaks, True) as (manager, events):
        layout.add("second")
        assert events.wait("added", "second").error is None
        assert manager._watcher is not None
        assert manager._watcher.mode == "events"


def test_a_folder_made_before_its_manifest_is_picked_up_by_its_events(
    layout: Layout, leaks: LeakCheck
) -> None:
    # With the tree no longer watched as a whole, a new folder must be watched on its
    # own before its manifest lands (the safety rescan is off in these tests).
    with managed(layout, leaks, True) as (manager, events):
        (layout.root / "late").mkdir()
        time.sleep(1.5)  # the folder's event has been handled long before
        assert manager.entries() == []
        layout.add("late")
        assert events.wait("added", "late").error is None


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_slow_copy_is_one_change(layout: Layout, leaks: LeakCheck, watch: bool | str) -> None:
    with managed(layout, leaks, watch) as (manager, events):
        directory = layout.root / "slow"
        layout.write_manifest(directory, manifest_doc("slow"))
        exe = directory / BIN_DIR / "slow"
        exe.parent.mkdir(parents=True)
        script = wrapper_script().encode()
        fd = os.open(exe, os.O_WRONLY | os.O_CREAT, 0o755)
        try:
            os.write(fd, b"#!/bin/sh\n")
            for i in range(30):  # 1.5 s of trickling writes, well under the 0.3 s settle
                os.write(fd, f"# padding {i}\n".encode())
                time.sleep(0.05)
            os.write(fd, script.split(b"\n", 1)[1])
        finally:
            os.close(fd)
        events.wait("added", "slow")
        time.sleep(1.0)  # room for any spurious second change to show up
        assert events.kinds("slow") == ["added"]
        assert events.of("added", "slow")[0].error is None
        assert pid_of(manager.client("slow").invoke_service("chat", b"{}")) > 0


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_renamed_in_directory_is_picked_up(
    layout: Layout, leaks: LeakCheck, watch: bool | str, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    layout.add("moved", into=staging)
    with managed(layout, leaks, watch) as (manager, events):
        os.rename(staging / "moved", layout.root / "moved")
        assert events.wait("added", "moved").error is None
        assert manager.entry("moved").executable == layout.exe("moved")


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_a_removed_plugin_is_stopped_and_dropped(
    layout: Layout, leaks: LeakCheck, watch: bool | str
) -> None:
    layout.add("p")
    layout.add("other")
    with managed(layout, leaks, watch) as (manager, events):
        client = manager.client("p")
        pid = pid_of(client.invoke_service("chat", b"{}"))
        shutil.rmtree(layout.root / "p")
        events.wait("removed", "p")
        assert gone(pid)
        assert [e.name for e in manager.entries()] == ["other"]
        with pytest.raises(PluginRemovedError):
            client.invoke_service("chat", b"{}")
        with pytest.raises(PluginRemovedError):
            manager.get("p")
        # Back again: the client a caller kept works again.
        layout.add("p")
        events.wait("added", "p", count=2)
        assert pid_of(client.invoke_service("chat", b"{}")) != pid
    assert events.kinds("p")[:4] == ["added", "started", "stopped", "removed"]


@pytest.mark.parametrize("watch", WATCH_MODES)
def test_replace_while_calling_loses_no_call(
    layout: Layout, leaks: LeakCheck, watch: bool | str
) -> None:
    layout.add("p", version="1.0.0")
    with managed(layout, leaks, watch) as (manager, events):
        client = manager.client("p")
        with Caller(client, "chat", b"{}") as caller:
            old_pid = pid_of(caller.last())
            layout.add("p", version="2.0.0")  # the manifest changes (atomic rename)
            replaced = events.wait("replaced", "p")
            assert replaced.old_pid == old_pid
            wait_until(
                lambda: json.loads(caller.last())["version"] == "2.0.0", 30.0, "version 2.0.0"
            )
            # ... and the executable itself changes.
            write_atomic(
                layout.exe("p"),
                wrapper_script(["DISK_PLUGIN_EXTRA=v3", "export DISK_PLUGIN_EXTRA"]).encode(),
                0o755,
            )
            events.wait("replaced", "p", count=2)
            wait_until(lambda: json.loads(caller.last())["extra"] == "v3", 30.0, "extra v3")
            done = caller.count()
            wait_until(lambda: caller.count() > done + 5, 30.0, "more calls")
        assert caller.failures == []
        versions = [json.loads(r)["version"] for r in caller.replies]
        assert "1.0.0" in versions
        assert versions[-1] == "2.0.0"
        wait_until(
            lambda: not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie",
            30.0,
            "the old process to end",
        )
        assert manager.entry("p").state is PluginState.RUNNING
    kinds = events.kinds("p")
    assert kinds.count("replaced") == 2
    assert "failed" not in kinds


def test_replace_a_go_plugin_while_calling(go_layout: Layout, leaks: LeakCheck) -> None:
    go_layout.add_go("g")
    with managed(go_layout, leaks, True) as (manager, events):
        with Caller(manager.client("g"), "echo", b"x") as caller:
            old = manager.entry("g").pid
            go_layout.add_go("g")  # a fresh copy of the binary renamed over the old one
            replaced = events.wait("replaced", "g")
            assert replaced.old_pid == old
            done = caller.count()
            wait_until(lambda: caller.count() > done + 20, 30.0, "more calls")
        assert caller.failures == []
        assert manager.entry("g").pid == replaced.pid != old


def test_a_failed_replacement_keeps_the_old_one_serving(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p", version="1.0.0")
    with managed(layout, leaks, True) as (manager, events):
        with Caller(manager.client("p"), "chat", b"{}") as caller:
            old_pid = pid_of(caller.last())
            layout.add("p", version="2.0.0", test={"exit_at_start": 4})
            failed = events.wait("failed", "p")
            assert isinstance(failed.error, PluginExitedError)
            assert "keeps serving" in failed.reason
            entry = manager.entry("p")
            assert entry.state is PluginState.RUNNING
            assert entry.pid == old_pid
            assert isinstance(entry.error, PluginExitedError)
            # A broken build (not executable) is refused the same way.
            write_atomic(layout.exe("p"), wrapper_script().encode(), 0o644)
            broken = events.wait("failed", "p", count=2)
            assert isinstance(broken.error, ExecutableNotExecutableError)
            # And so is a manifest that no longer parses; a client asked for now gets the
            # process that still serves, as the event says, not the manifest's error.
            (layout.root / "p" / "plugin.yaml").write_text("version: [unclosed\n")
            unparsable = events.wait("failed", "p", count=3)
            assert isinstance(unparsable.error, InvalidManifestError)
            assert "keeps serving" in unparsable.reason
            assert pid_of(manager.client("p").invoke_service("chat", b"{}")) == old_pid
            done = caller.count()
            wait_until(lambda: caller.count() > done + 5, 30.0, "more calls")
        assert caller.failures == []
        assert {pid_of(r) for r in caller.replies} == {old_pid}
        assert {json.loads(r)["version"] for r in caller.replies} == {"1.0.0"}
    assert "replaced" not in events.kinds("p")


def test_a_broken_manifest_keeps_serving_when_the_directory_has_another_name(
    layout: Layout, leaks: LeakCheck
) -> None:
    # A manifest that gives no name used to look like a rename to the directory's name:
    # the running plugin was stopped and dropped (PluginRemovedError) instead of serving.
    layout.add("ollama-dir", "ollama")
    with managed(layout, leaks, False) as (manager, events):
        old_pid = pid_of(manager.client("ollama").invoke_service("chat", b"{}"))
        (layout.root / "ollama-dir" / "plugin.yaml").write_text("provider: [unclosed\n")
        manager.rescan()
        (entry,) = manager.entries()
        assert (entry.name, entry.state) == ("ollama", PluginState.RUNNING)
        assert isinstance(entry.error, InvalidManifestError)
        assert pid_of(manager.client("ollama").invoke_service("chat", b"{}")) == old_pid
        with pytest.raises(InvalidManifestError):
            manager.reload("ollama")
        events.wait("failed", "ollama", count=2)  # the rescan's, the reload's
        assert "removed" not in events.kinds("ollama")


def test_rescan_waits_for_a_swap_the_watcher_began(layout: Layout, leaks: LeakCheck) -> None:
    # rescan() waited only for what it started itself: a swap the watcher had begun was
    # still running when it returned, and calls still went to the old build.
    layout.add("p", version="1.0.0")
    with managed(layout, leaks, True) as (manager, _events):
        assert json.loads(manager.client("p").invoke_service("chat", b"{}"))["version"] == "1.0.0"
        layout.add("p", version="2.0.0", wrapper_lines=["sleep 3"])  # a slow start
        time.sleep(1.5)  # the watcher has seen it (0.3 s settle) and is starting it
        (entry,) = manager.rescan()
        assert entry.manifest is not None
        assert entry.manifest.provider.version == "2.0.0"
        assert json.loads(manager.client("p").invoke_service("chat", b"{}"))["version"] == "2.0.0"


def test_a_call_in_flight_finishes_on_the_old_process(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p", version="1.0.0")
    with managed(layout, leaks, False) as (manager, events):
        client = manager.client("p")
        old_pid = pid_of(client.invoke_service("chat", b"{}"))
        result: list[bytes] = []
        slow = threading.Thread(
            target=lambda: result.append(client.invoke_service("chat", b'{"ms": 2000}'))
        )
        slow.start()
        wait_until(lambda: manager.entry("p").pid is not None, 30.0, "a pid")
        time.sleep(0.3)  # the slow call is under way on the old process
        layout.add("p", version="2.0.0")
        manager.rescan()  # returns once the old process is drained and stopped
        slow.join()
        assert pid_of(result[0]) == old_pid
        assert json.loads(client.invoke_service("chat", b"{}"))["version"] == "2.0.0"
    kinds = events.kinds("p")
    assert kinds.index("replaced") < kinds.index("stopped")


def test_the_drain_is_bounded(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p", version="1.0.0")
    with managed(layout, leaks, False, drain_timeout=0.5) as (manager, events):
        client = manager.client("p")
        client.invoke_service("chat", b"{}")
        errors: list[BaseException] = []

        def too_slow() -> None:
            try:
                client.invoke_service("chat", b'{"ms": 20000}')
            except PluginCallError as exc:
                errors.append(exc)

        slow = threading.Thread(target=too_slow)
        slow.start()
        time.sleep(0.3)
        layout.add("p", version="2.0.0")
        manager.rescan()
        slow.join()
        assert len(errors) == 1
        assert "in flight" in events.wait("stopped", "p").reason


def test_reload_swaps_in_a_fresh_process_or_raises_keeping_the_old(
    layout: Layout, leaks: LeakCheck
) -> None:
    layout.add("p")
    with managed(layout, leaks, False) as (manager, events):
        with Caller(manager.client("p"), "chat", b"{}") as caller:
            first = pid_of(caller.last())
            manager.reload("p")  # same files: a rolling restart
            second = manager.entry("p").pid
            assert second != first
            layout.add("p", test={"exit_at_start": 5})
            with pytest.raises(PluginExitedError):
                manager.reload("p")
            assert manager.entry("p").pid == second
            done = caller.count()
            wait_until(lambda: caller.count() > done + 5, 30.0, "more calls")
        assert caller.failures == []
        assert {pid_of(r) for r in caller.replies} == {first, second}
    assert events.kinds("p").count("replaced") == 1


def _reload_during_an_endless_call(
    manager: PluginManager, events: EventLog
) -> tuple[list[BaseException], threading.Thread, threading.Thread, int | None]:
    """Reload "p" while a call that never ends runs on it: returns once the swap is done
    and the old process drains that call (what the call raised, the caller and reloader
    threads, the new process's pid)."""
    client = manager.client("p")
    client.invoke_service("chat", b"{}")
    outcome: list[BaseException] = []

    def endless() -> None:
        try:
            client.invoke_service("chat", b'{"ms": 600000}', timeout=700)
        except AogPluginsError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=endless)
    caller.start()
    time.sleep(0.3)
    reloader = threading.Thread(target=manager.reload, args=("p",))
    reloader.start()
    new = events.wait("replaced", "p").pid  # the old process drains its endless call
    return outcome, caller, reloader, new


def test_close_does_not_wait_for_a_drain(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p")
    events = EventLog()
    manager = PluginManager(
        layout.root, watch=False, env=leaks.env, on_event=events, drain_timeout=600
    )
    outcome, caller, reloader, _ = _reload_during_an_endless_call(manager, events)
    manager.close()  # returns (within pytest's timeout) although the drain allows 600 s
    caller.join()
    reloader.join()
    assert len(outcome) == 1


def test_stop_does_not_wait_for_a_drain(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p")
    with managed(layout, leaks, False, drain_timeout=600) as (manager, events):
        outcome, caller, reloader, new = _reload_during_an_endless_call(manager, events)
        stopper = threading.Thread(target=manager.stop, args=("p",), daemon=True)
        stopper.start()
        stopper.join(30.0)  # it waited for the drain: up to 600 s
        assert not stopper.is_alive(), "stop() waited for the old process's drain"
        reloader.join()
        caller.join()
        assert len(outcome) == 1
        assert manager.entry("p").state is EntryState.NOT_STARTED
        # Both processes stopped, the old one's drain cut short (the two events may
        # arrive in either order: each process is stopped on a thread of its own).
        events.wait("stopped", "p", count=2)  # delivered on the event thread
        stops = events.of("stopped", "p")
        assert new in [e.pid for e in stops]
        old = [e for e in stops if e.pid != new]
        assert len(old) == 1
        assert "cut short" in old[0].reason
        reply = manager.client("p").invoke_service("chat", b"{}")
        assert pid_of(reply) not in {new, old[0].pid}


def test_without_file_events_it_falls_back_to_polling(
    layout: Layout,
    leaks: LeakCheck,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("watchfiles", "watchfiles._rust_notify"):  # as if they could not be imported
        monkeypatch.setitem(sys.modules, name, None)
    with (
        caplog.at_level(logging.WARNING, logger="aog_plugins.manager"),
        managed(layout, leaks, True) as (_manager, events),
    ):
        layout.add("late")
        assert events.wait("added", "late").error is None
    assert any("polling" in r.getMessage() for r in caplog.records)


def test_a_rescan_during_a_replacement_does_not_swap_twice(
    layout: Layout, leaks: LeakCheck
) -> None:
    layout.add("p", version="1.0.0")
    with managed(layout, leaks, False) as (manager, events):
        manager.get("p")
        # The new build takes a second to start, so the second rescan comes mid-swap.
        layout.add("p", version="2.0.0", wrapper_lines=["sleep 1"])
        first = threading.Thread(target=manager.rescan)
        first.start()
        time.sleep(0.3)  # sequencing only: with or without it one swap must happen
        manager.rescan()
        first.join()
    assert events.kinds("p").count("replaced") == 1


@pytest.mark.parametrize("how", ["close", "remove"])
def test_a_replacement_under_way_is_given_up_by_close_or_removal(
    layout: Layout, leaks: LeakCheck, how: str
) -> None:
    # The new build's start was not under the start guard that close() and a removal
    # abandon: both waited for it, up to start_timeout (the old process kept running).
    layout.add("p", version="1.0.0")
    manager = PluginManager(layout.root, watch=False, env=leaks.env, start_timeout=300)
    try:
        old = manager.get("p").pid
        layout.add("p", version="2.0.0", wrapper_lines=["sleep 600"])  # never handshakes
        reloader = threading.Thread(target=manager.reload, args=("p",), daemon=True)
        reloader.start()
        wait_until(lambda: len(leaks.processes()) >= 2, 30, "the new build to be spawned")
        if how == "close":
            ender = threading.Thread(target=manager.close)
        else:
            shutil.rmtree(layout.root / "p")
            ender = threading.Thread(target=manager.rescan)
        ender.start()
        ender.join(30)  # a bound far below the start timeout, not a speed requirement
        reloader.join(30)
        assert not ender.is_alive(), f"{how} waited for the replacement's start timeout"
        assert not reloader.is_alive()
        assert gone(old)
        with pytest.raises(PluginRemovedError):
            manager.get("p")
    finally:
        manager.close()
