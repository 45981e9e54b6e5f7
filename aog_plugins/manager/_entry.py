"""What the manager tells its caller: :class:`PluginEntry` snapshots and
:class:`ManagerEvent` notifications."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aog_plugins.errors import AogPluginsError
from aog_plugins.manager._discovery import Found
from aog_plugins.process import Plugin, PluginState
from aog_plugins.types import PluginManifest

__all__ = ["EntryState", "EventKind", "ManagerEvent", "PluginEntry", "alive", "entry_of"]


class EntryState(enum.Enum):
    """The state of a plugin that has no running process (else a :class:`PluginState`)."""

    NOT_STARTED = "NOT_STARTED"
    """Usable: the next ``get()`` or call starts it (also after ``stop()`` or an idle stop)."""
    BROKEN = "BROKEN"
    """Its directory is unusable (see ``error``); it is judged again when its files change."""
    FAILED = "FAILED"
    """Its last start failed (see ``error``); the next use tries again."""


@dataclass(frozen=True)
class PluginEntry:
    """One plugin directory as the manager sees it now (a snapshot; it does not update).

    ``name`` is ``provider.name`` (the directory's name when the manifest has none);
    ``executable`` the file for this machine; ``state`` a :class:`PluginState` while a
    process exists, else an :class:`EntryState`; ``error`` why it is unusable, or the
    last start/replace failure; ``services`` the manifest's service names.
    """

    name: str
    directory: Path
    manifest: PluginManifest | None
    executable: Path | None
    state: PluginState | EntryState
    pid: int | None
    error: AogPluginsError | None
    services: tuple[str, ...]

    @property
    def usable(self) -> bool:
        """True unless the directory itself is broken."""
        return self.state is not EntryState.BROKEN

    @property
    def task_types(self) -> tuple[str, ...]:
        """The manifest's task types, once each, in service order."""
        if self.manifest is None:
            return ()
        return tuple(dict.fromkeys(s.task_type for s in self.manifest.services if s.task_type))


EventKind = Literal["added", "removed", "replaced", "started", "stopped", "failed"]


@dataclass(frozen=True)
class ManagerEvent:
    """Something happened to a plugin of the directory.

    ``kind``: ``added`` (a new directory), ``removed`` (its directory is gone; it was
    stopped), ``replaced`` (its manifest or executable changed; a running plugin was
    swapped), ``started`` (a process is serving, also after a supervised restart),
    ``stopped`` (by ``stop()``, idle timeout, removal, replacement or ``close()``, or it
    exited on its own), ``failed`` (a start, restart or replacement failed, or it
    crashed). ``pid`` is the process concerned (the new one for ``replaced``),
    ``old_pid`` the replaced one, ``error`` the typed failure.
    """

    kind: EventKind
    name: str
    directory: Path
    reason: str
    pid: int | None = None
    old_pid: int | None = None
    error: AogPluginsError | None = None

    def __str__(self) -> str:
        pid = f" pid {self.pid}" if self.pid is not None else ""
        return f"{self.kind:<8} {self.name}{pid}: {self.reason}"


_DEAD = (PluginState.EXITED, PluginState.FATAL, PluginState.STOPPING)


def alive(plugin: Plugin) -> bool:
    """Whether ``plugin`` has a process that serves (or is about to serve) calls."""
    return plugin.state not in _DEAD


def entry_of(
    found: Found,
    plugin: Plugin | None,
    error: AogPluginsError | None,
    *,
    starting: bool,
) -> PluginEntry:
    """The entry of a directory ``found``, running ``plugin`` (if any), whose last start
    failed with ``error`` (if any), with a start under way or not."""
    state: PluginState | EntryState
    pid = None
    if plugin is not None:
        state = plugin.state
        pid = plugin.pid if alive(plugin) else None
    elif starting:
        state = PluginState.STARTING
    elif found.error is not None:
        state = EntryState.BROKEN
    elif error is not None:
        state = EntryState.FAILED
    else:
        state = EntryState.NOT_STARTED
    services = tuple(s.service_name for s in found.manifest.services) if found.manifest else ()
    return PluginEntry(
        name=found.name,
        directory=found.directory,
        manifest=found.manifest,
        executable=found.executable,
        state=state,
        pid=pid,
        error=found.error or error,
        services=services,
    )
