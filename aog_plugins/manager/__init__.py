"""The plugin manager: a directory of on-disk AOG plugins, loaded lazily, supervised and
hot-plugged (new, removed and replaced plugins are picked up while the host runs).

See :class:`PluginManager` and ``docs/manager.md``.
"""

from aog_plugins.manager._entry import EntryState, EventKind, ManagerEvent, PluginEntry
from aog_plugins.manager._manager import PluginManager

__all__ = ["EntryState", "EventKind", "ManagerEvent", "PluginEntry", "PluginManager"]
