"""Test plugins and hosts with real plugin processes: a pytest plugin plus fault helpers.

Installing aog-plugins registers the pytest plugin (entry point ``pytest11``, module
:mod:`aog_plugins.testing.plugin`) with the fixtures ``aog_plugin``, ``aog_provider`` and
``aog_plugin_manager``; see ``docs/testing.md``. This package itself does not import
pytest, so the helpers below work under any test runner:

- :func:`crash` (SIGKILL by default), :func:`freeze` (SIGSTOP ... SIGCONT),
  :func:`wait_for_state`, :func:`fail_next_start` (the next restart exits with status 1);
- :class:`PluginHarness`: what the fixtures use: start plugins, then ``close()`` kills them
  and names every process, socket dir or relay they left behind.
"""

from aog_plugins.testing._faults import (
    WaitTimeoutError,
    crash,
    fail_next_start,
    freeze,
    wait_for_state,
)
from aog_plugins.testing._harness import PluginHarness
from aog_plugins.testing._leaks import MARKER_ENV

__all__ = [
    "MARKER_ENV",
    "PluginHarness",
    "WaitTimeoutError",
    "crash",
    "fail_next_start",
    "freeze",
    "wait_for_state",
]
