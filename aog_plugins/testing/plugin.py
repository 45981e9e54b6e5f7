"""The pytest plugin (loaded through the ``pytest11`` entry point ``aog_plugins``).

Fixtures: ``aog_plugin`` (start a plugin executable or plugin directory), ``aog_provider``
(a real Python provider process from plain callables), ``aog_plugin_manager`` (a
``PluginManager`` over a directory). Everything they start is killed at teardown, and a
test whose plugins left anything behind fails at teardown with the pids named. A failing
test gets one report section per plugin: state, exit code, events, log records, stderr.

Options: ``--aog-plugin-dir``, ``--aog-auto-mtls``, ``--aog-keep-plugin-logs DIR``.
State lives in the test item (``item.stash``), so xdist workers share nothing.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import psutil
import pytest

from aog_plugins.manager import PluginManager
from aog_plugins.process import Plugin
from aog_plugins.testing._harness import PluginHarness
from aog_plugins.testing._leaks import MARKER_ENV, find_leaks, kill_leaks

__all__ = ["aog_plugin", "aog_plugin_manager", "aog_provider"]

HARNESS = pytest.StashKey[PluginHarness]()
_FINISHING = pytest.StashKey[bool]()
_PATH_OPTIONS = ("aog_plugin_dir", "aog_keep_plugin_logs")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aog-plugins", "aog-plugins: plugin processes as fixtures")
    group.addoption(
        "--aog-plugin-dir",
        metavar="DIR",
        default=None,
        help="directory of plugins: default for aog_plugin_manager, and where "
        "aog_plugin('name') looks for a bare name",
    )
    group.addoption(
        "--aog-auto-mtls",
        action="store_true",
        default=False,
        help="aog_plugin and aog_provider start plugins with AutoMTLS unless told otherwise",
    )
    group.addoption(
        "--aog-keep-plugin-logs",
        metavar="DIR",
        default=None,
        help="write every plugin's log records, events and exit to DIR/<test>/ (passing tests too)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Make the path options absolute now, against the directory pytest was run from: a
    test that changes directory (``monkeypatch.chdir``) must not change what they mean.
    The log directory is created here, so an unusable one is a usage error up front."""
    base = config.invocation_params.dir
    for dest in _PATH_OPTIONS:
        value = config.getoption(dest)
        if value is not None:
            setattr(config.option, dest, os.path.join(base, os.path.expanduser(value)))
    logs = config.getoption("aog_keep_plugin_logs")
    if logs is not None:
        try:
            os.makedirs(logs, exist_ok=True)
        except OSError as exc:
            why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
            raise pytest.UsageError(
                f"--aog-keep-plugin-logs {logs}: cannot create that directory ({why}); "
                "pass a directory that exists or can be created"
            ) from None


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    """Fixtures still set up now (after Ctrl-C or ``pytest.exit()``) are torn down inside
    this hook, where a failure has no test to go to: :func:`_fail` reports it instead."""
    session.stash[_FINISHING] = True
    yield


def _fail(request: pytest.FixtureRequest, message: str) -> None:
    """Fail the test at teardown; when the session is ending (interrupted), where pytest
    would show an exception as a crash of its own, write ``message`` to the terminal."""
    if not request.session.stash.get(_FINISHING, False):
        pytest.fail(message, pytrace=False)
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(f"{request.node.nodeid}: {message}", red=True)
    else:
        sys.stderr.write(f"{request.node.nodeid}: {message}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    harness = item.stash.get(HARNESS, None)
    if harness is not None and report.failed:
        for title, text in harness.sections():
            report.sections.append((title, text))
    return report


@pytest.fixture
def _aog_plugins_harness(request: pytest.FixtureRequest) -> Generator[PluginHarness, None, None]:
    """The per-test harness behind the fixtures; fails the test if anything leaked."""
    config = request.config
    harness = PluginHarness(
        auto_mtls=bool(config.getoption("aog_auto_mtls")),
        plugin_dir=config.getoption("aog_plugin_dir"),
        keep_logs=config.getoption("aog_keep_plugin_logs"),
        label=request.node.nodeid,
    )
    request.node.stash[HARNESS] = harness
    yield harness
    problems = harness.close()
    if problems:
        _fail(request, "aog_plugins: " + "\n".join(problems))


@pytest.fixture
def aog_plugin(_aog_plugins_harness: PluginHarness) -> Callable[..., Plugin]:
    """Start a plugin: ``aog_plugin(cmd_or_plugin_dir, *, auto_mtls=<--aog-auto-mtls>,
    env=None, restart=RestartPolicy.never(), **launch_kwargs) -> Plugin``.

    ``cmd_or_plugin_dir``: an executable, an argv list, a directory with ``plugin.yaml``
    (this platform's executable is started), or a bare name under ``--aog-plugin-dir``
    (on PATH without it). A string with a ``/`` is a path relative to the current
    directory, never looked up on PATH (see ``PluginHarness.resolve``).
    Killed at teardown; the test fails if a process, socket dir or relay outlives it.
    """
    return _aog_plugins_harness.start  # its signature is the fixture's


@pytest.fixture
def aog_provider(_aog_plugins_harness: PluginHarness) -> Callable[..., Plugin]:
    """A real Python provider plugin process: ``aog_provider(services={"chat": fn},
    streams={"chat": gen}, kind="local", manifest=None, name="aog-test-provider",
    **aog_plugin_kwargs) -> Plugin``. Callables must be module-level (imported again by
    name in the plugin process); see ``docs/testing.md``."""
    return _aog_plugins_harness.provider


@pytest.fixture
def aog_plugin_manager(
    request: pytest.FixtureRequest,
) -> Generator[Callable[..., PluginManager], None, None]:
    """``aog_plugin_manager(directory=<--aog-plugin-dir>, **kwargs) -> PluginManager``;
    closed at teardown, and the test fails if a process of its plugins (or one they
    forked, also outside their process group) outlives ``close()``."""
    made: list[tuple[PluginManager, Path, set[int], str]] = []

    def make(directory: str | os.PathLike[str] | None = None, **kwargs: Any) -> PluginManager:
        chosen = directory if directory is not None else request.config.getoption("aog_plugin_dir")
        if chosen is None:
            raise pytest.UsageError(
                "aog_plugin_manager needs a directory: pass one, or run pytest with "
                "--aog-plugin-dir DIR"
            )
        marker = uuid.uuid4().hex
        # Inherited by every plugin and whatever it forks, also children that leave the group.
        kwargs["env"] = {**(kwargs.get("env") or {}), MARKER_ENV: marker}
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        manager = PluginManager(chosen, **kwargs)
        made.append((manager, Path(chosen).resolve(), before, marker))
        return manager

    yield make
    problems = []
    for manager, directory, before, marker in made:
        manager.close()
        leaks = find_leaks(marker, (), ())
        marked = {leak.pid for leak in leaks if leak.pid is not None}
        left = [p for p in _started_from(directory, before) if p.pid not in marked]
        found = [_describe(pid) for pid in sorted(marked)] + [_describe(p.pid) for p in left]
        kill_leaks(leaks)
        for proc in left:
            proc.kill()
        if found:
            problems.append(
                f"PluginManager over {directory} left processes running after close(): "
                + "; ".join(found)
            )
    if problems:
        _fail(request, "aog_plugins: " + "\n".join(problems) + " (now killed)")


def _describe(pid: int) -> str:
    try:
        return f"pid {pid} ({' '.join(psutil.Process(pid).cmdline())[:200]})"
    except psutil.Error:
        return f"pid {pid}"


def _started_from(directory: Path, before: set[int]) -> list[psutil.Process]:
    """Our live descendants, new since ``before``, whose executable is under ``directory``."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        if proc.pid in before:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or MARKER_ENV in proc.environ():
                continue
            argv = proc.cmdline()
            paths = [proc.exe(), *argv[:2]]
        except psutil.Error:
            continue
        if any(p and os.path.realpath(p).startswith(f"{directory}{os.sep}") for p in paths):
            found.append(proc)
    return found
