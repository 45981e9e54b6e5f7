"""Idempotent reads are retried once when the plugin dies under them (docs/lifecycle.md):
the plugin is SIGKILLed while the call is in flight, and the call still answers, from the
restarted plugin."""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from aog_plugins import GRPCProviderClient, RestartPolicy, launch
from aog_plugins.types import EngineVersionResponse, ListResponse
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.server.test_provider_support import Collected
from tests.support.wait import wait_until

__all__ = ["leak_check"]

QUICK = RestartPolicy(backoff_base=0.05, max_restarts=3, min_uptime=30)

READS: dict[str, Callable[[GRPCProviderClient], object]] = {
    "get_running_models": lambda client: client.get_running_models(timeout=60),
    "get_version": lambda client: client.get_version(timeout=60),
}


@pytest.mark.parametrize("method", sorted(READS))
def test_read_is_retried_when_the_plugin_dies_mid_call(
    leak_check: LeakCheck, tmp_path: Path, method: str
) -> None:
    logger = logging.getLogger(f"tests.client.retries.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs = Collected()
    logger.addHandler(logs)
    env = {**leak_check.env, "AOG_FIXTURE_HANG_ONCE": str(tmp_path / "hung")}
    with launch(
        plugin_cmd("local_provider.py"), restart=QUICK, extra_env=env, logger=logger
    ) as plugin:
        first = plugin.pid
        killed = threading.Event()

        def kill_when_hung() -> None:
            # The plugin logs "read hangs" once the call is inside the provider.
            logs.wait_for("read hangs", 60)
            os.kill(first, signal.SIGKILL)
            killed.set()

        killer = threading.Thread(target=kill_when_hung, daemon=True)
        killer.start()
        answer = READS[method](plugin.client)
        killer.join()
        assert killed.is_set(), "the call never reached the provider"
        assert plugin.pid != first, "the answer came from the restarted plugin"
        expected = ListResponse if method == "get_running_models" else EngineVersionResponse
        assert isinstance(answer, expected)
    logger.removeHandler(logs)


def test_a_call_on_a_channel_closed_under_it_is_a_typed_error(leak_check: LeakCheck) -> None:
    # The host closes a plugin's channel when its process exits, so that calls in flight
    # fail at once; a call that took the channel a moment before got grpcio's bare
    # "ValueError: Cannot invoke RPC on closed channel!" (a rare flake of the crash tests).
    # Closing the channel by hand makes that moment last.
    from aog_plugins.errors import PluginCallError, PluginConnectError

    with launch(
        plugin_cmd("echo_plugin.py"), restart=RestartPolicy.never(), extra_env=leak_check.env
    ) as plugin:
        plugin.client.health_check(timeout=30)
        plugin.channel.close()
        fresh = GRPCProviderClient(plugin)  # its stub is made on the closed channel
        for call in (
            lambda: plugin.client.get_manifest(timeout=30),
            lambda: list(plugin.client.invoke_service_stream("chat", b"{}", timeout=30)),
            lambda: fresh.get_version(timeout=30),
        ):
            with pytest.raises(PluginCallError, match="channel to the plugin was closed") as info:
                call()
            assert info.value.code == "UNAVAILABLE"
            assert not info.value.process_exited  # its process still runs
        with pytest.raises(PluginConnectError, match="closed"):
            plugin.ping()  # its health check's stub too
    # kill() asks for Shutdown on that channel: grpcio segfaulted making its stub there.


@pytest.mark.parametrize("stop", ["sigkill", "kill()"])
def test_a_read_with_no_plugin_to_retry_on_raises_the_crash(
    leak_check: LeakCheck, tmp_path: Path, stop: str
) -> None:
    # The retry of a crashed read found the plugin EXITED (no restarts) or STOPPING (a
    # kill()) and raised that PluginFatalError: the crash (exit code, stderr tail, who
    # stopped it), which docs/lifecycle.md promises for a call in flight, was lost.
    from aog_plugins.errors import PluginCrashedError

    hung = tmp_path / "hung"
    env = {**leak_check.env, "AOG_FIXTURE_HANG_ONCE": str(hung)}
    with launch(
        plugin_cmd("local_provider.py"), restart=RestartPolicy.never(), extra_env=env
    ) as plugin:

        def stop_when_hung() -> None:
            wait_until(hung.exists, 60, "the read never reached the provider")
            if stop == "sigkill":
                os.kill(plugin.pid, signal.SIGKILL)
            else:
                plugin.kill()

        stopper = threading.Thread(target=stop_when_hung, daemon=True)
        stopper.start()
        with pytest.raises(PluginCrashedError) as crashed:
            plugin.client.get_version(timeout=60)
        stopper.join()
        if stop == "sigkill":
            assert crashed.value.exit_code == -signal.SIGKILL
        else:
            assert crashed.value.stopped_by_host == "kill() called"
