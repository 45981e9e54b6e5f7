"""aog_plugin against real Go and Python plugins, in a pytest run of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testing.conftest import LOCAL_PROVIDER, MISBEHAVE, run_inner

GO_SUITE = """
from aog_plugins import PluginState, RestartPolicy
from aog_plugins.testing import crash, fail_next_start, wait_for_state

def test_manifest(aog_plugin):
    plugin = aog_plugin(GO)
    assert plugin.client.get_manifest().services

def test_auto_mtls_through_the_relay(aog_plugin):
    plugin = aog_plugin(GO, auto_mtls=True)
    plugin.ping()
    assert plugin.client.get_manifest().services

def test_crash_and_a_failed_restart(aog_plugin):
    events = []
    policy = RestartPolicy(backoff_base=0.01, jitter=0.0, max_restarts=5)
    plugin = aog_plugin(GO, restart=policy, on_event=events.append)
    fail_next_start(plugin)
    first = crash(plugin)
    wait_for_state(plugin, PluginState.RUNNING)
    assert plugin.pid != first
    failed = [e for e in events if "made to fail by fail_next_start" in e.reason]
    assert failed and failed[0].new is PluginState.BACKOFF, [e.reason for e in events]
    assert plugin.client.get_manifest().services
"""


def test_a_go_plugin_suite_passes(pytester: pytest.Pytester, go_provider: Path) -> None:
    result = run_inner(pytester, GO_SUITE, GO=str(go_provider))
    result.assert_outcomes(passed=3)


PYTHON_SUITE = """
import pytest
from aog_plugins.errors import PluginCallError
from aog_plugins.testing import freeze

def test_calls(aog_plugin):
    plugin = aog_plugin([PYTHON, LOCAL])
    assert b"hi" in plugin.client.invoke_service("chat", b'{"messages": [{"content": "hi"}]}')

def test_frozen_plugin_times_out_then_answers(aog_plugin):
    plugin = aog_plugin([PYTHON, LOCAL])
    with freeze(plugin):
        with pytest.raises(PluginCallError):
            plugin.client.get_manifest(timeout=0.5)
    assert plugin.client.get_manifest().services

def test_a_child_in_the_plugin_group_is_no_leak(aog_plugin):
    aog_plugin([PYTHON, MISBEHAVE, "grandchild"]).ping()
"""


def test_a_python_plugin_suite_passes(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, PYTHON_SUITE, LOCAL=str(LOCAL_PROVIDER), MISBEHAVE=str(MISBEHAVE))
    result.assert_outcomes(passed=3)
