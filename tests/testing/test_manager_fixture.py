"""The ``aog_plugin_manager`` fixture (issue 12) in pytest runs of their own, over plugins
directories laid out like AOG's, generated per test."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import psutil
import pytest

from tests.manager.conftest import BIN_DIR, Layout
from tests.testing.conftest import MISBEHAVE, run_inner

SUITE = """
import json

from aog_plugins import PluginManager

def test_the_plugin_dir_option_is_the_default(aog_plugin_manager):
    manager = aog_plugin_manager()
    assert isinstance(manager, PluginManager)
    assert str(manager.directory) == PLUGINS
    assert [e.name for e in manager.entries()] == ["alpha", "beta"]
    reply = json.loads(manager.client("alpha").invoke_service("chat", b"{}"))
    assert reply["name"] == "alpha"

def test_a_directory_and_manager_options(aog_plugin_manager):
    manager = aog_plugin_manager(PLUGINS, eager=True, aog_version="1.4.0")
    (beta,) = manager.find(service="embed")
    reply = json.loads(manager.client(beta.name).invoke_service("embed", b"{}"))
    assert (reply["name"], reply["aog_version"]) == ("beta", "1.4.0")

def test_several_managers_each_closed(aog_plugin_manager):
    first = aog_plugin_manager()
    second = aog_plugin_manager(PLUGINS)
    first.get("alpha").ping()
    second.get("alpha").ping()
    assert first.get("alpha").pid != second.get("alpha").pid
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Layout:
    root = tmp_path / "plugins"
    root.mkdir()
    return Layout(root)


def test_a_suite_using_the_manager_fixture_passes(
    pytester: pytest.Pytester, plugins: Layout
) -> None:
    plugins.add("alpha")
    plugins.add("beta", services=[("embed", "embed")])
    root = str(plugins.root)
    result = run_inner(pytester, SUITE, "--aog-plugin-dir", root, PLUGINS=root)
    result.assert_outcomes(passed=3)


def test_without_a_directory_the_fixture_says_what_to_pass(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, "def test_it(aog_plugin_manager):\n    aog_plugin_manager()\n")
    assert result.ret != 0
    assert "aog_plugin_manager needs a directory" in result.stdout.str() + result.stderr.str()


LEAKY = """
import psutil

def test_leaks_a_child(aog_plugin_manager):
    manager = aog_plugin_manager()
    plugin = manager.get("leaky")
    (child,) = psutil.Process(plugin.pid).children()  # the one that leaves the group
    with open(PIDFILE, "w") as out:
        out.write(str(child.pid))
"""


def test_a_manager_whose_plugin_leaks_a_child_fails_naming_the_pid(
    pytester: pytest.Pytester, plugins: Layout, tmp_path: Path
) -> None:
    directory = plugins.add("leaky", write_exe=False)
    plugins.add("tidy")  # never started: nothing to report of it
    exe = directory / BIN_DIR / "leaky"
    exe.parent.mkdir(parents=True)
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{MISBEHAVE}" escape-child\n')
    exe.chmod(0o755)
    pidfile = tmp_path / "child.pid"
    result = run_inner(pytester, LEAKY, "--aog-plugin-dir", str(plugins.root), PIDFILE=str(pidfile))
    result.assert_outcomes(passed=1, errors=1)
    child = int(pidfile.read_text())
    out = result.stdout.str()
    assert re.search(
        rf"PluginManager over {re.escape(str(plugins.root))} left processes running after "
        rf"close\(\): pid {child} \(.*sleep.*\)",
        out,
    ), out
    assert "(now killed)" in out
    # Reported, then killed: nothing is left running.
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
