"""Faults on demand for a running :class:`~aog_plugins.Plugin`: crash it, freeze it, wait
for a state, make its next start fail. No pytest here: these work in any test runner."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aog_plugins.errors import AogPluginsError, ConfigurationError
from aog_plugins.process import Plugin, PluginState
from aog_plugins.testing._watch import describe_exit
from aog_plugins.transport import seconds

__all__ = [
    "WaitTimeoutError",
    "crash",
    "fail_next_start",
    "freeze",
    "plugin_name",
    "wait_for_state",
]

_POLL = 0.01


class WaitTimeoutError(AogPluginsError, TimeoutError):
    """A plugin did not reach the wanted state (or did not die) within the timeout."""


@dataclass(frozen=True)
class FailableStart:
    """A harness-started plugin whose next start :func:`fail_next_start` can replace:
    ``name`` for the message, ``directory`` (the harness's, removed when it closes) for
    the failing script."""

    name: str
    directory: Path


# Per process (xdist workers do not share it): which plugins can be made to fail a start.
_failable: weakref.WeakKeyDictionary[Plugin, FailableStart] = weakref.WeakKeyDictionary()
_failable_lock = threading.Lock()


def register_failable_start(plugin: Plugin, start: FailableStart) -> None:
    with _failable_lock:
        _failable[plugin] = start


def plugin_name(plugin: Plugin) -> str:
    """The plugin's name as its logger carries it (``aog_plugins.plugin.<name>...``)."""
    name = plugin.logger.name
    prefix = "aog_plugins.plugin."
    return name[len(prefix) :] if name.startswith(prefix) else name


class _Process(Protocol):
    """What the faults need of a plugin's process (ours, or an attached one)."""

    @property
    def pid(self) -> int: ...

    @property
    def exited(self) -> bool: ...


def _process(plugin: Plugin) -> _Process:
    """The plugin's current process: its pid and whether it exited, about the same process
    (``plugin.pid`` and ``plugin.exited`` may be read across a restart)."""
    return plugin._current.process


def _signal(proc: _Process, sig: int) -> bool:
    """Send ``sig`` to ``proc`` itself; False (nothing sent) when it already exited.

    Never a stranger that got its pid since: the pidfd is opened first, and ``proc`` had
    not exited (been reaped) after that, so the pidfd is of ``proc``."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # pragma: no cover - no pidfd (old kernels, not Linux)
        if proc.exited:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        return True
    try:
        if proc.exited:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def _group_of(pid: int) -> int | None:
    """The plugin's own process group, or None when it shares ours (never signal that)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return None if pgid == os.getpgid(0) else pgid


def crash(
    plugin: Plugin, sig: int = signal.SIGKILL, *, wait: bool = True, timeout: float = 10.0
) -> int:
    """Send ``sig`` (default SIGKILL) to the plugin's current process and return its pid.

    With ``wait`` (the default) return only once the host has seen the exit: the plugin
    left RUNNING (BACKOFF, EXITED, FATAL) or already runs as a new process. Raises
    :class:`WaitTimeoutError` if that does not happen within ``timeout`` s (e.g. the plugin
    ignores ``sig``).
    """
    if isinstance(sig, bool) or sig not in signal.valid_signals():
        raise ConfigurationError(f"crash: {sig!r} is not a signal; e.g. signal.SIGKILL")
    timeout = seconds("timeout", timeout, finite=False, zero=True)
    proc = _process(plugin)
    pid = proc.pid
    _signal(proc, sig)  # not sent if it already exited: the host sees (saw) that anyway
    if not wait:
        return pid
    deadline = time.monotonic() + timeout
    while plugin.pid == pid and plugin.state is PluginState.RUNNING:
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"plugin {plugin_name(plugin)} (pid {pid}) is still RUNNING {timeout:g}s after "
                f"signal {_signame(sig)}: it ignores the signal; use SIGKILL to crash it"
            )
        time.sleep(_POLL)
    return pid


@contextlib.contextmanager
def freeze(plugin: Plugin) -> Iterator[int]:
    """Stop the plugin (SIGSTOP to its process group) for the ``with`` block, then SIGCONT.

    A frozen plugin keeps its sockets open but answers nothing: calls time out instead of
    failing fast, which is what a hung plugin looks like. Yields the frozen pid. A plugin
    with no running process (EXITED, FATAL, in BACKOFF) raises :class:`ConfigurationError`.
    """
    proc = _process(plugin)
    pid = proc.pid
    if not _signal(proc, signal.SIGSTOP):
        raise ConfigurationError(
            f"freeze: plugin {plugin_name(plugin)} (pid {pid}) has no running process to "
            f"freeze: it is {plugin.state.value} ({describe_exit(plugin.exit_code)}); "
            "wait_for_state(plugin, 'RUNNING') first"
        )
    # Stopped, not gone: its pid, and so its group id, cannot have been reused.
    group = _group_of(pid)
    if group is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGSTOP)
    try:
        yield pid
    finally:
        # Only while it has not exited (been killed meanwhile) is its group still its own.
        if _signal(proc, signal.SIGCONT) and group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)


def wait_for_state(
    plugin: Plugin,
    state: PluginState | str | Iterable[PluginState | str],
    timeout: float = 10.0,
) -> PluginState:
    """Wait until ``plugin.state`` is ``state`` (or one of several); return the state seen.

    States may be given by name (``"RUNNING"``). Raises :class:`WaitTimeoutError` naming
    the state the plugin is stuck in when ``timeout`` s pass first.
    """
    wanted = _states(state)
    timeout = seconds("timeout", timeout, finite=False, zero=True)
    deadline = time.monotonic() + timeout
    while True:
        seen = plugin.state
        if seen in wanted:
            return seen
        if time.monotonic() >= deadline:
            names = " or ".join(sorted(s.value for s in wanted))
            raise WaitTimeoutError(
                f"plugin {plugin_name(plugin)} (pid {plugin.pid}) is {seen.value} after "
                f"{timeout:g}s, waited for {names}"
            )
        time.sleep(_POLL)


def fail_next_start(plugin: Plugin) -> None:
    """Make the plugin's next start (its next restart) fail, once.

    The process started then prints a line saying so on stderr and exits with status 1
    before its handshake, so the host sees a :class:`~aog_plugins.errors.PluginExitedError`
    and goes to BACKOFF (or FATAL when its restart budget is spent); the start after that
    runs the real executable again. Works on plugins started by the
    ``aog_plugin``/``aog_provider`` fixtures or a
    :class:`~aog_plugins.testing.PluginHarness`: that one start runs a failing script of
    the harness instead of the plugin's command, which itself is never replaced (the
    plugin always runs under its own path). A plugin that will not start again (restarts
    off, the fixtures' default; EXITED; FATAL) raises :class:`ConfigurationError`.
    """
    with _failable_lock:
        start = _failable.get(plugin)
    if start is None:
        raise ConfigurationError(
            f"fail_next_start: plugin {plugin_name(plugin)} was not started by the "
            "aog_plugin/aog_provider fixtures (or a PluginHarness); start it with one of those"
        )
    policy = plugin.restart_policy
    if policy.mode == "never" or policy.max_restarts == 0:
        raise ConfigurationError(
            f"fail_next_start: plugin {plugin_name(plugin)} never restarts (its restart "
            f"policy is {policy.mode!r} with max_restarts={policy.max_restarts}; the fixtures' "
            "default is RestartPolicy.never()), so it has no next start to fail: start it "
            "with restart=RestartPolicy(...)"
        )
    if plugin.state in (PluginState.EXITED, PluginState.FATAL):
        raise ConfigurationError(
            f"fail_next_start: plugin {plugin_name(plugin)} is {plugin.state.value} and will "
            "not start again, so it has no next start to fail"
        )
    start.directory.mkdir(parents=True, exist_ok=True)
    script = start.directory / f"{start.name}-fail-next-start"
    message = (
        f"aog_plugins.testing: this start of {start.name} was made to fail by fail_next_start()\n"
    )
    staged = start.directory / f".{script.name}.new"
    staged.write_text(
        f"#!{sys.executable} -S\nimport sys\nsys.stderr.write({message!r})\nsys.exit(1)\n"
    )
    staged.chmod(0o755)
    os.replace(staged, script)
    plugin._run_next_start_as((str(script),))


def _states(state: PluginState | str | Iterable[PluginState | str]) -> frozenset[PluginState]:
    items: Iterable[object]
    try:
        items = (state,) if isinstance(state, (PluginState, str)) else tuple(state)
    except TypeError:
        items = (state,)
    found: set[PluginState] = set()
    for item in items:
        if isinstance(item, PluginState):
            found.add(item)
            continue
        if not isinstance(item, str):
            raise ConfigurationError(
                f"wait_for_state: {item!r} is not a PluginState or a state's name"
            )
        try:
            found.add(PluginState[item.upper()])
        except KeyError:
            names = ", ".join(s.value for s in PluginState)
            raise ConfigurationError(f"unknown plugin state {item!r}; one of {names}") from None
    if not found:
        raise ConfigurationError("wait_for_state needs at least one state")
    return frozenset(found)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
