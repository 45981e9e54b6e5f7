"""PluginHarness: start plugins for one test, stop them all, and say what they left behind.

The pytest fixtures are thin wrappers around it; other test runners can use it directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aog_plugins.errors import ConfigurationError, PluginNotFoundError
from aog_plugins.process import Plugin, PluginEvent, RestartPolicy, launch
from aog_plugins.testing._faults import FailableStart, register_failable_start
from aog_plugins.testing._leaks import MARKER_ENV, find_leaks, kill_leaks
from aog_plugins.testing._provider import write_provider_program
from aog_plugins.testing._watch import PluginWatch, RecordBuffer
from aog_plugins.transport import pid_named_dir
from aog_plugins.types import PluginManifest

__all__ = ["Command", "PluginHarness"]

Command = str | os.PathLike[str] | Sequence[str]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_NAME = 120
"""Longest kept-log file or directory name made from a test id or plugin name (the file
system allows 255 bytes; a parametrized test id can be much longer)."""


class PluginHarness:
    """Starts plugins (:meth:`start`, :meth:`provider`) and, in :meth:`close`, kills them
    and returns a message for everything they left behind (processes, socket dirs, relays).

    ``auto_mtls`` is the default for :meth:`start`; ``plugin_dir`` resolves bare names
    (``start("my-plugin")`` -> ``<plugin_dir>/my-plugin``); with ``keep_logs`` each plugin's
    log records, events and exit go to ``<keep_logs>/<label>/<n>-<name>.log``.
    """

    def __init__(
        self,
        *,
        auto_mtls: bool = False,
        plugin_dir: str | os.PathLike[str] | None = None,
        keep_logs: str | os.PathLike[str] | None = None,
        label: str = "",
    ) -> None:
        self.auto_mtls = auto_mtls
        self.plugin_dir = Path(plugin_dir) if plugin_dir is not None else None
        # Absolute now: a test that changes directory must not move its logs.
        self._keep = (
            Path(os.path.abspath(keep_logs)) / _file_name(label or "run") if keep_logs else None
        )
        self._watches: list[PluginWatch] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._tmp: str | None = None
        self._closed = False

    @property
    def watches(self) -> list[PluginWatch]:
        with self._lock:
            return list(self._watches)

    def _private_dir(self) -> Path:
        with self._lock:
            if self._tmp is None:
                self._tmp = pid_named_dir("testing")  # swept after a SIGKILLed run
            return Path(self._tmp)

    # ---- starting ---------------------------------------------------------------------
    def resolve(self, cmd: Command, *, cwd: str | os.PathLike[str] | None = None) -> Command:
        """What :meth:`start` runs for ``cmd``. An argv list: itself. A str without a ``/``
        is a name: the entry of that name in ``plugin_dir``, or without ``plugin_dir`` left
        for :func:`~aog_plugins.launch` to look up on PATH. Anything else (``"./x"``,
        ``"bin/x"``, a ``Path``) is a path relative to ``cwd`` (default: the current
        directory), made absolute. A plugin directory (with plugin.yaml) becomes this
        platform's executable. A path or entry that does not exist raises
        :class:`~aog_plugins.errors.PluginNotFoundError` naming where it was looked for."""
        if not isinstance(cmd, (str, os.PathLike)):
            return cmd
        given = os.fspath(cmd)
        if isinstance(cmd, str) and "/" not in given:
            if self.plugin_dir is None:
                return given  # launch() looks a name up on PATH
            path = Path(os.path.abspath(self.plugin_dir / given))
            if not path.exists():
                raise PluginNotFoundError(
                    f"plugin not found: no entry {given!r} in the plugin directory "
                    f"{self.plugin_dir} (--aog-plugin-dir): {path} does not exist",
                    diagnosis="a name without '/' means an entry of the plugin directory; "
                    f"for a file in the current directory write './{given}'",
                )
        else:
            path = Path(os.path.abspath(os.path.join(cwd if cwd is not None else ".", given)))
            if not path.exists():
                raise PluginNotFoundError(
                    f"plugin not found: {given!r} is not at {path}",
                    diagnosis="a path with '/' is relative to the current directory (or to "
                    "cwd= when given) and is never looked up on PATH: check the path, or "
                    "build or install the plugin there",
                )
        if path.is_dir():
            executable = PluginManifest.load(path).executable_path()
            if not executable.exists():
                raise PluginNotFoundError(
                    f"the plugin directory {path} names {executable} for this platform, "
                    "which does not exist: build or install the plugin there first"
                )
            return executable
        return path

    def start(
        self,
        cmd: Command,
        *,
        auto_mtls: bool | None = None,
        env: Mapping[str, str] | None = None,
        restart: RestartPolicy | None = None,
        **launch_kwargs: Any,
    ) -> Plugin:
        """:func:`aog_plugins.launch` the plugin (restarts off unless ``restart`` is given)
        with its logs and events recorded for the report and its leftovers tracked."""
        if self._closed:
            raise ConfigurationError("this PluginHarness is closed; start plugins before close()")
        resolved = self.resolve(cmd, cwd=launch_kwargs.get("cwd"))
        seq = next(self._seq)
        if isinstance(resolved, (str, os.PathLike)):
            name = os.path.basename(os.fspath(resolved))
        else:
            name = _argv_name([os.fspath(a) for a in resolved])
        marker = uuid.uuid4().hex
        extra_env = {**(launch_kwargs.pop("extra_env", None) or {}), MARKER_ENV: marker}
        user_logger: logging.Logger | None = launch_kwargs.pop("logger", None)
        logger = user_logger or logging.getLogger(f"aog_plugins.plugin.{name}.{seq}")
        if user_logger is None:
            logger.setLevel(logging.DEBUG)  # everything into the report, and on to caplog
        log_path = None
        if self._keep is not None:
            log_path = str(self._keep / f"{seq}-{_file_name(name)}.log")
        try:
            if self._keep is not None:
                self._keep.mkdir(parents=True, exist_ok=True)
            records = RecordBuffer(log_path)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the plugin's log file {log_path} ({exc.strerror}): pass a "
                "keep_logs directory (--aog-keep-plugin-logs) that can be written; nothing "
                "was started"
            ) from exc
        logger.addHandler(records)
        watch = PluginWatch(
            name=name, marker=marker, logger=logger, records=records, log_path=log_path
        )
        with self._lock:
            self._watches.append(watch)
        user_on_event: Callable[[PluginEvent], None] | None = launch_kwargs.pop("on_event", None)

        def on_event(event: PluginEvent) -> None:
            watch.on_event(event)
            if user_on_event is not None:
                user_on_event(event)

        # Under its own (absolute) path: a launcher may find its files from "$0".
        plugin = launch(
            resolved,
            auto_mtls=self.auto_mtls if auto_mtls is None else auto_mtls,
            env=env,
            extra_env=extra_env,
            restart=restart if restart is not None else RestartPolicy.never(),
            on_event=on_event,
            logger=logger,
            **launch_kwargs,
        )
        watch.plugin = plugin
        watch.saw_process(plugin.pid)
        # fail_next_start() runs a script from here instead, for one start.
        register_failable_start(plugin, FailableStart(name, self._private_dir() / f"p{seq}"))
        return plugin

    def provider(
        self,
        services: Mapping[str, Callable[..., Any]] | None = None,
        streams: Mapping[str, Callable[..., Iterable[Any]]] | None = None,
        *,
        kind: str = "local",
        manifest: PluginManifest | Mapping[str, Any] | None = None,
        name: str = "aog-test-provider",
        **launch_kwargs: Any,
    ) -> Plugin:
        """A real Python provider plugin process serving ``services`` and ``streams``
        (module-level callables, see :mod:`aog_plugins.testing`) through ``serve_provider``."""
        directory = self._private_dir() / f"provider-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        program = write_provider_program(
            directory,
            services=services or {},
            streams=streams or {},
            kind=kind,
            manifest=manifest,
            name=name,
        )
        return self.start(program, **launch_kwargs)

    # ---- stopping ---------------------------------------------------------------------
    def close(self) -> list[str]:
        """Kill every plugin, then return one message per plugin that left something behind
        (after killing those processes and removing those dirs). Idempotent."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            watches = list(self._watches)
        problems: list[str] = []
        for watch in watches:
            if watch.plugin is not None:
                try:
                    watch.plugin.kill()
                except Exception as exc:
                    problems.append(f"plugin {watch.name}: kill() failed: {exc!r}")
        for watch in watches:
            leaks = find_leaks(watch.marker, watch.pids, watch.socket_dirs)
            if leaks:
                watch.leaks = [str(leak) for leak in leaks]
                kill_leaks(leaks)
                pids = ", ".join(str(p) for p in watch.pids) or "none"
                problems.append(
                    f"plugin {watch.name} (pids {pids}) left behind after it was stopped:\n"
                    + "\n".join(f"  {leak}" for leak in leaks)
                    + "\n(now killed/removed)"
                )
            watch.logger.removeHandler(watch.records)
            watch.records.close()
            if watch.log_path is not None and watch.records.file_error is None:
                with contextlib.suppress(OSError), open(watch.log_path, "a", encoding="utf-8") as f:
                    f.write(f"--- {watch.title()} ---\n{watch.report(records=False)}")
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return problems

    def sections(self) -> list[tuple[str, str]]:
        """(title, text) per plugin: what a failing test's report shows."""
        return [(w.title(), w.report()) for w in self.watches]

    def __enter__(self) -> PluginHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        problems = self.close()
        if problems:
            raise AssertionError("\n".join(problems))


def _file_name(text: str) -> str:
    """``text`` as one file name: runs of unsafe characters become ``_``; a long one is cut
    short and ends in a hash of the whole ``text``, so distinct long ids stay distinct."""
    safe = _UNSAFE.sub("_", text)
    if len(safe) <= _MAX_NAME:
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{safe[: _MAX_NAME - len(digest) - 1]}-{digest}"


def _argv_name(argv: Sequence[str]) -> str:
    """``[python, script.py, ...]`` -> ``script.py``; else the executable's name."""
    if len(argv) > 1 and os.path.isfile(argv[1]) and not argv[1].startswith("-"):
        return os.path.basename(argv[1])
    return os.path.basename(argv[0]) if argv else "plugin"
