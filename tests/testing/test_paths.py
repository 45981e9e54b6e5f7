"""What aog_plugin/PluginHarness.start runs for a path or a name, and how the plugin sees it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from aog_plugins import RestartPolicy
from aog_plugins.errors import PluginNotFoundError
from aog_plugins.testing import PluginHarness, crash, fail_next_start, wait_for_state
from tests.testing.conftest import REPO


def _copy_example(plugins: Path) -> Path:
    """``python -m aog_plugins.examples --copy-to plugins``: the echo example, whose
    launcher bin/echo runs ``$(dirname "$0")/../plugin.py``."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "aog_plugins.examples", "--copy-to", str(plugins)],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert '"$(dirname "$0")/../plugin.py"' in (plugins / "echo" / "bin" / "echo").read_text()
    return plugins / "echo"


def test_a_launcher_that_finds_its_files_from_dollar_zero_starts_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_example(tmp_path / "plugins")
    monkeypatch.chdir(tmp_path)
    events: list[str] = []
    policy = RestartPolicy(backoff_base=0.01, jitter=0.0, max_restarts=5)
    with PluginHarness() as harness:
        plugin = harness.start(
            "./plugins/echo", restart=policy, on_event=lambda e: events.append(e.reason)
        )
        assert plugin.client.invoke_service("chat", b'"hi"') == b'"hi"'
        # It ran under its own path ("$0"), so its launcher found plugin.py next to it.
        launcher = tmp_path / "plugins" / "echo" / "bin" / "echo"
        assert psutil.Process(plugin.pid).cmdline()[1] == f"{launcher.parent}/../plugin.py"
        # fail_next_start still fails exactly one start of such a plugin.
        fail_next_start(plugin)
        crash(plugin)
        wait_for_state(plugin, "RUNNING")
        assert plugin.client.invoke_service("chat", b'"again"') == b'"again"'
    assert sum("made to fail by fail_next_start" in r for r in events) == 1, events


def test_a_missing_dot_slash_path_is_not_found_instead_of_run_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "./true" is a path relative to the current directory: with no such file it is
    not found there, and /usr/bin/true (on PATH) is never run."""
    monkeypatch.chdir(tmp_path)
    with (
        PluginHarness() as harness,
        pytest.raises(PluginNotFoundError, match=re.escape(f"'./true' is not at {tmp_path}/true")),
    ):
        harness.start("./true")
    assert not harness.watches  # nothing was started


def test_dot_slash_means_the_current_directory_even_with_a_plugin_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_example(tmp_path / "plugins")
    monkeypatch.chdir(tmp_path)
    with PluginHarness(plugin_dir=tmp_path / "plugins") as harness:
        # A bare name is the entry of the plugin directory ...
        assert harness.start("echo").client.invoke_service("chat", b'"x"') == b'"x"'
        # ... "./echo" is ./echo, which does not exist here.
        with pytest.raises(PluginNotFoundError, match=re.escape(f"is not at {tmp_path}/echo")):
            harness.start("./echo")
        with pytest.raises(PluginNotFoundError, match="no entry 'nope' in the plugin directory"):
            harness.start("nope")
