"""The helpers of aog_plugins.testing outside pytest fixtures, and how the plugin loads."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from aog_plugins import PluginState, RestartPolicy, launch
from aog_plugins.errors import ConfigurationError
from aog_plugins.process._tempdir import remove_stale_dirs
from aog_plugins.testing import (
    PluginHarness,
    WaitTimeoutError,
    crash,
    fail_next_start,
    freeze,
    wait_for_state,
)
from aog_plugins.testing._leaks import find_leaks, kill_leaks
from tests.support.wait import wait_until
from tests.testing.conftest import LOCAL_PROVIDER, MISBEHAVE


def test_importing_the_helpers_does_not_import_pytest() -> None:
    code = "import sys, aog_plugins.testing; print('pytest' in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "False"


def test_the_pytest11_entry_point_names_the_plugin_module() -> None:
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "aog_plugins"
    ]
    assert entry.value == "aog_plugins.testing.plugin"


def test_fail_next_start_needs_a_harness_started_plugin() -> None:
    with (
        launch([sys.executable, str(LOCAL_PROVIDER)]) as plugin,
        pytest.raises(ConfigurationError, match="fail_next_start"),
    ):
        fail_next_start(plugin)


def test_wait_for_state_times_out_naming_the_state() -> None:
    with PluginHarness() as harness:
        plugin = harness.start([sys.executable, str(LOCAL_PROVIDER)])
        with pytest.raises(WaitTimeoutError, match=r"is RUNNING after 0\.2s, waited for FATAL"):
            wait_for_state(plugin, PluginState.FATAL, timeout=0.2)
        with pytest.raises(ConfigurationError, match="unknown plugin state 'asleep'"):
            wait_for_state(plugin, "asleep")
        assert wait_for_state(plugin, ["exited", "RUNNING"]) is PluginState.RUNNING


def test_crash_with_an_ignored_signal_says_so() -> None:
    with PluginHarness() as harness:
        plugin = harness.start([sys.executable, str(MISBEHAVE), "ignore-shutdown"], kill_grace=0.1)
        with pytest.raises(WaitTimeoutError, match="ignores the signal"):
            crash(plugin, signal.SIGTERM, timeout=0.3)
        assert crash(plugin) > 0
        assert plugin.state is PluginState.EXITED


def echo(request: bytes) -> bytes:
    return request


def test_fail_next_start_fails_exactly_one_start() -> None:
    events: list[str] = []
    policy = RestartPolicy(backoff_base=0.01, jitter=0.0, max_restarts=5)
    with PluginHarness() as harness:
        plugin = harness.provider(
            {"echo": echo}, restart=policy, on_event=lambda e: events.append(e.reason)
        )
        fail_next_start(plugin)
        crash(plugin)
        wait_for_state(plugin, "RUNNING")
        crash(plugin)  # the next restart is normal again
        wait_for_state(plugin, "RUNNING")
        assert plugin.client.invoke_service("echo", b"[1]") == b"[1]"
    failed = [r for r in events if "made to fail by fail_next_start" in r]
    assert len(failed) == 1, events
    assert sum("restarted" in r for r in events) == 2, events


def test_a_socket_dir_and_a_socket_still_bound_here_are_leaks(tmp_path: Path) -> None:
    """What a relay that was not closed looks like: its socket, bound by this process,
    inside the plugin's socket dir; and the dir itself still there."""
    socket_dir = tmp_path / "aogp-x"
    socket_dir.mkdir()
    path = socket_dir / "relay-1" / "s"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        leaks = find_leaks(uuid.uuid4().hex, [], [str(socket_dir)])
    assert [(leak.kind, leak.path) for leak in leaks] == [
        ("relay", str(path)),
        ("socket dir", str(socket_dir)),
    ]
    kill_leaks(leaks)
    assert not socket_dir.exists()


def test_fail_next_start_also_fails_a_start_of_an_argv_list() -> None:
    events: list[str] = []
    policy = RestartPolicy(backoff_base=0.01, jitter=0.0, max_restarts=5)
    with PluginHarness() as harness:
        plugin = harness.start(
            [sys.executable, str(LOCAL_PROVIDER)],
            restart=policy,
            on_event=lambda e: events.append(e.reason),
        )
        fail_next_start(plugin)
        crash(plugin)
        wait_for_state(plugin, "RUNNING")
        assert plugin.client.get_manifest().services
    failed = [r for r in events if "this start of local_provider.py was made to fail" in r]
    assert len(failed) == 1, events


def test_kept_logs_of_a_long_test_id_fit_a_file_name(tmp_path: Path) -> None:
    """A parametrized test id can be far longer than the 255 bytes of a file name."""
    label = "test_x.py::test_long[" + "a" * 300 + "]"
    with PluginHarness(keep_logs=tmp_path, label=label) as harness:
        harness.start([sys.executable, str(LOCAL_PROVIDER)]).ping()
    with PluginHarness(keep_logs=tmp_path, label=label[:-1] + "b]") as harness:
        harness.start([sys.executable, str(LOCAL_PROVIDER)]).ping()
    kept = sorted(tmp_path.rglob("*.log"))
    assert len(kept) == 2, kept  # not one file for both: the cut names stay distinct
    assert all(len(p.parent.name) <= 120 and "STARTING -> RUNNING" in p.read_text() for p in kept)


def test_a_log_file_that_cannot_be_written_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "in-the-way").write_text("")
    with PluginHarness(keep_logs=tmp_path / "in-the-way", label="t") as harness:
        with pytest.raises(ConfigurationError, match="cannot write the plugin's log file"):
            harness.start([sys.executable, str(LOCAL_PROVIDER)])
        assert all(w.plugin is None for w in harness.watches)  # nothing was started


def test_a_full_disk_under_the_kept_logs_disturbs_neither_events_nor_teardown(
    tmp_path: Path,
) -> None:
    """Every write to the kept log file fails (it is /dev/full): the records stay in
    memory, events still reach the caller, close() still checks for leaks, and the
    report says the file was not written."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "1-misbehave.py.log").symlink_to("/dev/full")
    events: list[str] = []
    harness = PluginHarness(keep_logs=tmp_path, label="t")
    plugin = harness.start(
        [sys.executable, str(MISBEHAVE), "hclog"], on_event=lambda e: events.append(e.new.value)
    )
    plugin.ping()
    assert harness.close() == []
    assert events == ["RUNNING", "STOPPING", "EXITED"]
    ((_, text),) = harness.sections()
    assert "log file not written: " in text
    assert "No space left on device" in text
    assert "an info line" in text


def test_freeze_of_a_plugin_with_no_running_process_says_so() -> None:
    with PluginHarness() as harness:
        plugin = harness.start([sys.executable, str(LOCAL_PROVIDER)])
        crash(plugin)  # restarts are off: EXITED, its pid reaped (and free for a stranger)
        with (
            pytest.raises(ConfigurationError, match="no running process to freeze: it is EXITED"),
            freeze(plugin),
        ):
            pass


def test_unusable_timeouts_signals_and_states_are_configuration_errors() -> None:
    """Not a wait that ends at once (-1), or never (NaN), nor an OSError or TypeError."""
    with PluginHarness() as harness:
        plugin = harness.start([sys.executable, str(LOCAL_PROVIDER)])
        for timeout in (-1, float("nan"), "1"):
            with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
                wait_for_state(plugin, "FATAL", timeout=timeout)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
                crash(plugin, signal.SIGCONT, timeout=timeout)  # type: ignore[arg-type]
        for sig in (0, 999):
            with pytest.raises(ConfigurationError, match=f"crash: {sig} is not a signal"):
                crash(plugin, sig, timeout=0.1)
        with pytest.raises(ConfigurationError, match="3 is not a PluginState"):
            wait_for_state(plugin, 3)  # type: ignore[arg-type]
        assert wait_for_state(plugin, "RUNNING", timeout=0) is PluginState.RUNNING


def test_fail_next_start_of_a_plugin_that_will_not_start_again_says_so() -> None:
    """Not a call that silently does nothing (the fixtures start plugins without restarts)."""
    with PluginHarness() as harness:
        plugin = harness.start([sys.executable, str(LOCAL_PROVIDER)])
        with pytest.raises(ConfigurationError, match=r"never restarts .* restart=RestartPolicy"):
            fail_next_start(plugin)
        policy = RestartPolicy(backoff_base=0.01, jitter=0.0, max_restarts=5)
        restarting = harness.start([sys.executable, str(LOCAL_PROVIDER)], restart=policy)
        restarting.kill()
        with pytest.raises(ConfigurationError, match="is EXITED and will not start again"):
            fail_next_start(restarting)


@pytest.mark.parametrize(
    ("env", "args", "passed"),
    [
        ({}, ["-p", "no:aog_plugins"], 0),
        ({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, ["-p", "aog_plugins"], 1),
    ],
)
def test_the_plugin_is_turned_off_and_on_by_its_name(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    passed: int,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile(test_it="def test_it(aog_plugin):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=60)
    result.assert_outcomes(passed=passed, errors=1 - passed)


# A harness that has started a plugin, then a test process that dies of SIGKILL.
KILLED_WITH_A_HARNESS = textwrap.dedent(
    """
    import os, signal, sys
    from aog_plugins.testing import PluginHarness

    harness = PluginHarness()
    harness.start([sys.executable, sys.argv[1]])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_test_runs_harness_dir_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The harness's private dir was named aog-testing-*: once its test run had died of
    # SIGKILL (a CI timeout), no sweep recognized it and it stayed in TMPDIR for good.
    short = tempfile.mkdtemp(prefix="aogh-", dir="/tmp")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_WITH_A_HARNESS, str(LOCAL_PROVIDER)],
            env={**os.environ, "TMPDIR": short},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        # The reaper kills the plugin and removes its socket dir; a sweep the harness dir.
        monkeypatch.setattr(tempfile, "tempdir", short)

        def left() -> list[str]:
            remove_stale_dirs()
            return os.listdir(short)

        wait_until(lambda: not left(), 10, lambda: f"TMPDIR to be emptied: {left()}")
    finally:
        shutil.rmtree(short, ignore_errors=True)
