"""Starting on first use (once), find, stop, idle stop, environment, checksums before every
start and restart, events, eager start and close()."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from aog_plugins import Plugin, PluginManager, PluginState, RestartPolicy
from aog_plugins.errors import (
    AogPluginsError,
    PluginChecksumError,
    PluginExitedError,
    PluginRemovedError,
)
from aog_plugins.manager import EntryState
from tests.manager.conftest import EventLog, Layout, wrapper_script, write_atomic
from tests.support.leaks import LeakCheck
from tests.support.wait import wait_gone, wait_until


def whoami(manager: PluginManager, name: str, request: bytes = b"{}") -> dict[str, object]:
    reply = json.loads(manager.client(name).invoke_service("chat", request))
    assert isinstance(reply, dict)
    return reply


def test_sixteen_concurrent_gets_start_it_once(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p")
    events = EventLog()
    with PluginManager(layout.root, watch=False, env=leaks.env, on_event=events) as manager:
        assert manager.entry("p").state is EntryState.NOT_STARTED
        assert leaks.processes() == []  # lazy: nothing runs before the first use
        barrier = threading.Barrier(16)
        got: list[Plugin] = []
        lock = threading.Lock()

        def use() -> None:
            barrier.wait()
            plugin = manager.get("p")
            with lock:
                got.append(plugin)

        threads = [threading.Thread(target=use) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 16
        assert len({id(p) for p in got}) == 1
        assert len(leaks.processes()) == 1
        assert manager.entry("p").state is PluginState.RUNNING
        assert manager.entry("p").pid == got[0].pid
    assert len(events.of("started", "p")) == 1


def test_a_failed_start_is_shared_reported_and_retried(layout: Layout, leaks: LeakCheck) -> None:
    # The wrapper sleeps first so every caller arrives while the one start is under way.
    layout.add("p", test={"exit_at_start": 3}, wrapper_lines=["sleep 1"])
    events = EventLog()
    with PluginManager(layout.root, watch=False, env=leaks.env, on_event=events) as manager:
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def use() -> None:
            barrier.wait()
            try:
                manager.get("p")
            except PluginExitedError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 8
        assert len(events.wait("failed", "p").reason) > 0
        text = str(errors[0])
        assert "plugin 'p'" in text
        assert str(layout.root / "p") in text
        assert "exit code 3" in text
        entry = manager.entry("p")
        assert entry.state is EntryState.FAILED
        assert isinstance(entry.error, PluginExitedError)
        # Fixed on disk: the next use tries again and works.
        layout.add("p")
        manager.rescan()
        assert whoami(manager, "p")["name"] == "p"
        assert manager.entry("p").error is None
    assert len(events.of("failed", "p")) == 1


def test_find_by_service_and_task_type(layout: Layout) -> None:
    layout.add("a", services=[("chat", "chat"), ("embed", "embed")])
    layout.add("b", services=[("embed", "embed")])
    layout.add("c", services=[("tts", "text-to-speech")])
    layout.add("d", services=[("chat", "chat")], exe_mode=0o600)  # broken
    with PluginManager(layout.root, watch=False) as manager:
        assert [e.name for e in manager.find(service="chat")] == ["a"]
        assert [e.name for e in manager.find(task_type="embed")] == ["a", "b"]
        assert [e.name for e in manager.find(service="embed", task_type="embed")] == ["a", "b"]
        assert [e.name for e in manager.find(service="chat", task_type="embed")] == []
        assert [e.name for e in manager.find(task_type="text-to-speech")] == ["c"]
        assert [e.name for e in manager.find()] == ["a", "b", "c"]
        assert manager.entry("a").task_types == ("chat", "embed")


def test_stop_then_the_next_use_starts_it_again(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p")
    events = EventLog()
    with PluginManager(layout.root, watch=False, env=leaks.env, on_event=events) as manager:
        first = whoami(manager, "p")["pid"]
        manager.stop("p")
        assert leaks.processes() == []
        assert manager.entry("p").state is EntryState.NOT_STARTED
        second = whoami(manager, "p")["pid"]
        assert second != first
    assert events.kinds("p") == ["added", "started", "stopped", "started", "stopped"]
    assert set(events.threads) == {"aog-plugins-manager-events"}  # never the I/O thread


def test_idle_plugin_is_stopped_and_restarted_on_next_use(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p")
    events = EventLog()
    with PluginManager(
        layout.root, watch=False, env=leaks.env, on_event=events, idle_timeout=0.5
    ) as manager:
        client = manager.client("p")
        # A call longer than the idle timeout is in use the whole time: never cut off.
        first = json.loads(client.invoke_service("chat", b'{"ms": 1500}'))["pid"]
        stopped = events.wait("stopped", "p")
        assert "idle" in stopped.reason
        assert stopped.pid == first
        wait_until(lambda: leaks.processes() == [], 30.0, "the idle plugin to exit")
        assert manager.entry("p").state is EntryState.NOT_STARTED
        second = json.loads(client.invoke_service("chat", b"{}"))["pid"]  # the same client
        assert second != first
        assert len(events.of("started", "p")) == 2


def test_a_plugin_slow_to_stop_holds_up_no_other_idle_stop(
    layout: Layout, leaks: LeakCheck
) -> None:
    # "a" is busy with a call the manager does not count (over get()'s Plugin), so its
    # idle stop waits out kill_grace; the idle stops of "b" and "c", due just after, must
    # not queue behind it (they did: one janitor thread stopped plugins one by one).
    for name in ("a", "b", "c"):
        layout.add(name)
    events = EventLog()
    with PluginManager(
        layout.root,
        watch=False,
        env=leaks.env,
        on_event=events,
        eager=True,
        idle_timeout=0.6,
        kill_grace=1.5,
        install_signal_handlers=False,
    ) as manager:
        busy = manager.get("a")  # a use: "a" is due first, "b" and "c" right after

        def uncounted() -> None:
            with contextlib.suppress(AogPluginsError):  # cut off by the idle stop
                busy.client.invoke_service("chat", b'{"ms": 20000}')

        caller = threading.Thread(target=uncounted)
        caller.start()
        time.sleep(0.2)  # under way when the idle stop of "a" begins
        for name in ("b", "c"):
            whoami(manager, name)
        events.wait("stopped", "a")
        caller.join()
        stopped = [e.name for e in events.of("stopped")]
        assert set(stopped[: stopped.index("a")]) == {"b", "c"}, stopped


def test_environment_cwd_and_aog_version(layout: Layout, leaks: LeakCheck) -> None:
    directory = layout.add("p")
    env = {"DISK_PLUGIN_EXTRA": "added", **leaks.env}
    with PluginManager(layout.root, watch=False, env=env, aog_version="1.2.3") as manager:
        me = whoami(manager, "p")
    assert me["cwd"] == str(directory)
    assert me["aog_version"] == "1.2.3"
    assert me["extra"] == "added"
    assert me["home"] == os.environ.get("HOME")  # added to the host's environment
    replaced = {"DISK_PLUGIN_EXTRA": "only", "PATH": os.environ["PATH"], **leaks.env}
    with PluginManager(layout.root, watch=False, env=replaced, replace_env=True) as manager:
        me = whoami(manager, "p")
    assert me["extra"] == "only"
    assert me["home"] is None
    assert me["aog_version"] is None  # not given: not passed


def test_checksum_is_checked_before_every_start_and_restart(
    layout: Layout, leaks: LeakCheck, tmp_path: Path
) -> None:
    layout.add("p")
    exe = layout.exe("p")
    checksum = "sha256:" + hashlib.sha256(exe.read_bytes()).hexdigest()
    marker = tmp_path / "impostor-ran"
    events = EventLog()
    policy = RestartPolicy(max_restarts=2, backoff_base=0.05, backoff_max=0.1)
    with PluginManager(
        layout.root,
        watch=False,
        env=leaks.env,
        checksums={"p": checksum},
        restart=policy,
        on_event=events,
    ) as manager:
        pid = manager.get("p").pid
        # Swap the file under the running plugin, then crash it: the supervisor's restart
        # must refuse to run the new file.
        write_atomic(exe, wrapper_script([f"touch {marker}"]).encode(), 0o755)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: manager.entry("p").state is PluginState.FATAL, 30.0, "FATAL")
        assert any("checksum" in e.reason for e in events.of("failed", "p"))
        # A fresh start (next use) is checked too.
        with pytest.raises(PluginChecksumError) as caught:
            manager.get("p")
        assert caught.value.plugin == "p"
    assert not marker.exists()


def test_a_crashed_plugin_is_restarted_and_the_client_follows(
    layout: Layout, leaks: LeakCheck
) -> None:
    layout.add("p")
    events = EventLog()
    with PluginManager(layout.root, watch=False, env=leaks.env, on_event=events) as manager:
        first = whoami(manager, "p")["pid"]
        assert isinstance(first, int)
        os.kill(first, signal.SIGKILL)
        events.wait("started", "p", count=2)
        assert whoami(manager, "p")["pid"] != first
    kinds = events.kinds("p")
    assert kinds[:4] == ["added", "started", "failed", "started"]


def test_eager_starts_every_usable_plugin(layout: Layout, leaks: LeakCheck) -> None:
    for name in ("a", "b", "c"):
        layout.add(name)
    layout.add("broken", write_exe=False)
    with PluginManager(layout.root, watch=False, env=leaks.env, eager=True) as manager:
        states = {e.name: e.state for e in manager.entries()}
        assert states == {
            "a": PluginState.RUNNING,
            "b": PluginState.RUNNING,
            "c": PluginState.RUNNING,
            "broken": EntryState.BROKEN,
        }
        assert len(leaks.processes()) == 3


def test_close_leaves_nothing_and_later_use_fails_fast(layout: Layout, leaks: LeakCheck) -> None:
    for name in ("a", "b", "c"):
        layout.add(name)
    manager = PluginManager(layout.root, env=leaks.env)  # watching too
    clients = [manager.client(name) for name in ("a", "b", "c")]
    pids = [json.loads(c.invoke_service("chat", b"{}"))["pid"] for c in clients]
    held = manager.client("a")
    manager.close()
    manager.close()  # idempotent
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    with pytest.raises(PluginRemovedError):
        manager.get("a")
    with pytest.raises(AogPluginsError, match="closed"):  # close() closed its clients
        held.invoke_service("chat", b"{}")
    with pytest.raises(PluginRemovedError, match="closed"):  # did nothing, said nothing
        manager.rescan()


def test_a_second_close_returns_once_the_first_is_done(layout: Layout, leaks: LeakCheck) -> None:
    # A signal handler or an atexit hook may close while another thread does: it used to
    # return at once, with every plugin still running.
    for name in ("a", "b", "c", "d"):
        layout.add(name)
    manager = PluginManager(layout.root, env=leaks.env, watch=False, eager=True)
    first = threading.Thread(target=manager.close)
    first.start()
    try:
        wait_until(lambda: manager.closed, 10, "the first close() to begin")
        manager.close()
        assert leaks.processes() == [], "close() returned with plugins still running"
    finally:
        first.join()


def test_close_gives_up_a_start_under_way(layout: Layout, leaks: LeakCheck) -> None:
    # A plugin that never sends its handshake: close() used to wait out the whole start
    # timeout (60 s by default; Ctrl-C on `aog-plugins run` the same), and the waiting
    # get() got StartTimeoutError.
    layout.add("mute", wrapper_lines=["sleep 600"])
    manager = PluginManager(layout.root, env=leaks.env, watch=False, start_timeout=300)
    got: list[BaseException] = []

    def use() -> None:
        try:
            manager.get("mute")
        except BaseException as exc:
            got.append(exc)

    user = threading.Thread(target=use)
    user.start()
    wait_until(lambda: leaks.processes() != [], 30, "the plugin to be spawned")
    closer = threading.Thread(target=manager.close)
    closer.start()
    closer.join(60)  # a bound far below the start timeout, not a speed requirement
    user.join(60)
    assert not closer.is_alive(), "close() waited for the start timeout"
    assert len(got) == 1
    assert isinstance(got[0], PluginRemovedError), got


def test_go_plugin_in_an_aog_layout(go_layout: Layout, leaks: LeakCheck) -> None:
    go_layout.add_go("gofx")
    with PluginManager(go_layout.root, watch=False, env=leaks.env) as manager:
        reply = json.loads(manager.client("gofx").invoke_service("echo", b"hello"))
        assert reply["request"] == "hello"
        assert manager.entry("gofx").state is PluginState.RUNNING


SIGTERM_HOST = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    from aog_plugins import PluginManager
    from aog_plugins.aio import AsyncPluginManager

    options = json.loads(sys.argv[2])
    if sys.argv[3] == "asyncio":
        async def main():
            manager = await AsyncPluginManager.open(
                sys.argv[1], eager=True, watch=False, **options
            )
            print(json.dumps([e.pid for e in manager.entries()]), flush=True)
            await asyncio.Event().wait()
        asyncio.run(main())
    manager = PluginManager(sys.argv[1], eager=True, watch=False, **options)
    print(json.dumps([e.pid for e in manager.entries()]), flush=True)
    threading.Event().wait()
    """
)


@pytest.mark.parametrize("api", ["sync", "asyncio"])
@pytest.mark.parametrize("opt_out", [False, True], ids=["handlers", "opted-out"])
def test_sigterm_stops_an_eager_managers_plugins_before_the_host_ends(
    layout: Layout, leaks: LeakCheck, opt_out: bool, api: str
) -> None:
    # An eager manager starts its plugins on its own threads, where no signal handler can
    # be installed: SIGTERM ended the host at once, the plugins got no Shutdown and only
    # the reaper SIGKILLed them, after the host had died. Built on the main thread, the
    # manager now installs launch()'s handlers: the host stops (and reaps) its plugins,
    # then dies of the SIGTERM.
    layout.add("alpha")
    options = {"install_signal_handlers": False} if opt_out else {}
    host = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_HOST, str(layout.root), json.dumps(options), api],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **leaks.env},
    )
    try:
        assert host.stdout is not None
        pids = json.loads(host.stdout.readline())
        assert len(pids) == 1, pids
        assert pids[0], pids
        host.send_signal(signal.SIGTERM)
        _, err = host.communicate(timeout=60)
        gone_with_the_host = not psutil.pid_exists(pids[0])
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == -signal.SIGTERM, err
    if not opt_out:
        assert gone_with_the_host, "the host died before stopping its plugin"
    wait_gone(pids, 10)  # opted out: the reaper gets it
