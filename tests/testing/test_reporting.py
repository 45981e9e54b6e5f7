"""A failing test shows its plugins' logs; a leaking plugin fails its test; the options."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import psutil
import pytest

from aog_plugins.errors import PluginNotFoundError
from aog_plugins.testing import PluginHarness
from aog_plugins.types import go_arch, go_os
from tests.testing.conftest import LOCAL_PROVIDER, MISBEHAVE, run_inner

FAILING = """
def test_fails(aog_plugin):
    aog_plugin([PYTHON, MISBEHAVE, "hclog"]).ping()
    assert False, "the test itself failed"

def test_passes(aog_plugin):
    aog_plugin([PYTHON, MISBEHAVE, "hclog"]).ping()
"""


def test_a_failing_test_shows_the_plugin_log_section(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, FAILING, MISBEHAVE=str(MISBEHAVE))
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    sections = re.findall(r"-+ aog plugin misbehave\.py \(pids (\d+)\) -+", out)
    assert len(sections) == 1, out  # the failing test only
    assert "state RUNNING, still running" in out
    assert "--- events ---" in out
    assert "STARTING -> RUNNING: started" in out
    assert "an info line" in out  # an hclog record of the plugin
    assert "panic: something went badly wrong" in out  # and its raw stderr


LEAKY = """
def test_leaks_a_child(aog_plugin):
    aog_plugin([PYTHON, MISBEHAVE, "escape-child"]).ping()
"""


def test_a_child_that_outlives_its_plugin_fails_the_test(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, LEAKY, MISBEHAVE=str(MISBEHAVE))
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    match = re.search(r"escaped child pid (\d+)", out)
    assert match, out
    child = int(match.group(1))
    assert re.search(
        rf"plugin misbehave\.py \(pids \d+\) left behind after it was stopped:\n"
        rf"\s+process pid {child} \(.*sleep.*\) forked by the plugin, outside its process group",
        out,
    ), out
    # Reported, then killed: nothing is left running.
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


INTERRUPTED = """
import pytest

def test_interrupted(aog_plugin):
    aog_plugin([PYTHON, MISBEHAVE, "escape-child"]).ping()
    raise KeyboardInterrupt  # what Ctrl-C raises; pytest.exit() ends the session alike
"""


def test_a_leak_found_after_ctrl_c_is_reported_and_the_run_stays_interrupted(
    pytester: pytest.Pytester,
) -> None:
    """The fixtures are then torn down while the session finishes, where a failure would
    be a crash of pytest itself (a traceback, exit code 1) instead of a report."""
    result = run_inner(pytester, INTERRUPTED, MISBEHAVE=str(MISBEHAVE))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    match = re.search(
        r"test_inner\.py::test_interrupted: aog_plugins: plugin misbehave\.py \(pids \d+\) "
        r"left behind after it was stopped:\n\s+process pid (\d+) \(.*sleep.*\) forked",
        out,
    )
    assert match, out
    child = int(match.group(1))
    assert "Traceback" not in out + result.stderr.str()
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


PLUGIN_YAML = """\
version: "1.0"
provider:
  name: yaml-provider
  type: local
services: []
platforms:
  {platform}:
    executable: bin/run-local
"""

OPTIONS = """
import os

def test_by_name_from_the_plugin_dir(aog_plugin):
    plugin = aog_plugin("myplugin")
    assert plugin.client.get_manifest().provider.name
    assert plugin.handshake.server_cert  # --aog-auto-mtls is the default

def test_a_plain_connection_when_asked(aog_plugin):
    assert aog_plugin("myplugin", auto_mtls=False).handshake.server_cert is None
"""


def test_plugin_dir_auto_mtls_and_kept_logs(pytester: pytest.Pytester) -> None:
    plugin_dir = pytester.path / "plugins" / "myplugin"
    (plugin_dir / "bin").mkdir(parents=True)
    (plugin_dir / "plugin.yaml").write_text(PLUGIN_YAML.format(platform=f"{go_os()}_{go_arch()}"))
    run = plugin_dir / "bin" / "run-local"
    run.write_text(f'#!/bin/sh\nexec {sys.executable} {LOCAL_PROVIDER} "$@"\n')
    run.chmod(0o755)
    logs = pytester.path / "logs"
    result = run_inner(
        pytester,
        OPTIONS,
        "--aog-plugin-dir",
        str(plugin_dir.parent),
        "--aog-auto-mtls",
        "--aog-keep-plugin-logs",
        str(logs),
    )
    result.assert_outcomes(passed=2)
    kept = sorted(logs.rglob("*.log"))
    assert [p.parent.name for p in kept] == [
        "test_inner.py_test_a_plain_connection_when_asked",
        "test_inner.py_test_by_name_from_the_plugin_dir",
    ]
    text = kept[1].read_text()
    assert "aog plugin run-local (pids" in text
    assert "STARTING -> RUNNING" in text


def test_a_plugin_dir_whose_executable_is_missing_says_so(tmp_path: Path) -> None:
    (tmp_path / "plugin.yaml").write_text(PLUGIN_YAML.format(platform=f"{go_os()}_{go_arch()}"))
    with PluginHarness() as harness, pytest.raises(PluginNotFoundError, match="build or install"):
        harness.start(tmp_path)


CHDIR = """
def test_in_another_directory(aog_plugin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    aog_plugin("myplugin").ping()
"""


def test_relative_path_options_mean_the_directory_pytest_was_run_from(
    pytester: pytest.Pytester,
) -> None:
    """A test that changes directory does not change where the options point."""
    run = pytester.path / "plugins" / "myplugin"
    run.parent.mkdir()
    run.write_text(f'#!/bin/sh\nexec {sys.executable} {LOCAL_PROVIDER} "$@"\n')
    run.chmod(0o755)
    args = ("--aog-plugin-dir", "plugins", "--aog-keep-plugin-logs", "logs")
    result = run_inner(pytester, CHDIR, *args)
    result.assert_outcomes(passed=1)
    (kept,) = (pytester.path / "logs").rglob("*.log")
    assert kept.name == "1-myplugin.log"


def test_a_log_directory_that_cannot_be_made_is_a_usage_error(pytester: pytest.Pytester) -> None:
    in_the_way = pytester.path / "a-file"
    in_the_way.write_text("")
    result = run_inner(pytester, FAILING, "--aog-keep-plugin-logs", str(in_the_way / "logs"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --aog-keep-plugin-logs {in_the_way}/logs: cannot create that directory (*)*"]
    )
