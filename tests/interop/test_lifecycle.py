"""Stateful RPC sequences on a fresh plugin per row, then Shutdown; and crashes mid-call.

Every ProviderService RPC goes through ``GRPCProviderClient`` here or in ``test_matrix``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from aog_plugins import Plugin
from aog_plugins.errors import PluginCrashedError, PluginError
from aog_plugins.types import (
    DeleteRequest,
    LoadRequest,
    ProgressResponse,
    PullModelRequest,
    StreamChunk,
    UnloadModelRequest,
)
from tests.interop.conftest import FAMILY, Family, Records, Target, targets
from tests.process.conftest import LeakCheck

KILL_GRACE = 2.0


def _code(call: object, *args: object) -> int:
    """The PluginError code ``call(*args)`` raises."""
    assert callable(call)
    with pytest.raises(PluginError) as failed:
        call(*args, timeout=30)
    return failed.value.code


def _operate_status(plugin: Plugin, family: Family) -> None:
    client = plugin.client
    assert client.get_operate_status(timeout=30) == 0
    client.set_operate_status(2, timeout=30)
    assert client.get_operate_status(timeout=30) == 2
    assert _code(client.health_check) == family.unhealthy_code
    client.set_operate_status(1, timeout=30)
    client.health_check(timeout=30)


def _local_engine(plugin: Plugin, family: Family) -> None:
    client = plugin.client
    assert client.check_engine(timeout=30) is False
    assert _code(client.start_engine, "daemon") == 2001  # not installed
    client.install_engine(timeout=30)
    assert client.check_engine(timeout=30) is True
    assert _code(client.start_engine, "bogus-mode") == family.bad_mode_code
    client.start_engine("daemon", timeout=30)
    config = client.get_config(timeout=30)
    assert (config.host, config.device_type) == ("127.0.0.1:16677", "cpu")
    assert client.get_version(timeout=30).version

    assert client.pull_model(PullModelRequest(model="interop-a:1b"), timeout=30).status == "success"
    seen: list[ProgressResponse] = []
    last = client.pull_model(PullModelRequest(model="interop-b:1b"), seen.append, timeout=30)
    assert last.status == "success"
    assert seen[0].status == "pulling manifest"
    downloads = [p for p in seen if p.digest]
    assert downloads
    assert downloads[-1].completed == downloads[-1].total > 0
    assert all(p.digest.startswith("sha256:") for p in downloads)
    assert _code(client.pull_model, PullModelRequest(model="missing-model")) == 3000
    with pytest.raises(PluginError) as missing:
        list(client.pull_model_stream(PullModelRequest(model="missing-model"), timeout=30))
    assert missing.value.code == 3000

    names = [m.name for m in client.list_models(timeout=30).models]
    assert {"interop-a:1b", "interop-b:1b"} <= set(names)
    assert names == sorted(names)
    client.load_model(LoadRequest(model="interop-a:1b"), timeout=30)
    running = client.get_running_models(timeout=30).models
    assert "interop-a:1b" in [m.name for m in running]
    client.unload_model(UnloadModelRequest(models=["interop-a:1b"]), timeout=30)
    running = client.get_running_models(timeout=30).models
    assert "interop-a:1b" not in [m.name for m in running]
    client.delete_model(DeleteRequest(model="interop-b:1b"), timeout=30)
    assert "interop-b:1b" not in [m.name for m in client.list_models(timeout=30).models]
    assert _code(client.load_model, LoadRequest(model="never-pulled")) == 3000

    client.stop_engine(timeout=30)
    client.init_env(timeout=30)
    client.upgrade_engine(timeout=30)


def _remote_auth(plugin: Plugin, family: Family) -> None:
    client = plugin.client
    assert _code(client.validate_auth) == family.no_creds_code
    assert _code(client.refresh_auth) == family.no_creds_code
    client.set_auth("apikey", {"api_key": "interop-key"}, timeout=30)
    client.validate_auth(timeout=30)
    client.refresh_auth(timeout=30)
    bad_key, code = family.bad_key
    client.set_auth("apikey", {"api_key": bad_key}, timeout=30)
    assert _code(client.validate_auth) == code


@pytest.mark.parametrize("target", targets())
def test_stateful_rpcs_then_shutdown(
    target: Target, leak_check: LeakCheck, records: Records
) -> None:
    family = target.family
    plugin = target.launch(leak_check, kill_grace=KILL_GRACE, logger=records.logger)
    try:
        if family.unhealthy_code is not None:
            _operate_status(plugin, family)
        if family.kind == "local":
            _local_engine(plugin, family)
        if family.kind == "remote":
            _remote_auth(plugin, family)
        plugin.client.health_check(timeout=30)
    finally:
        plugin.kill()
    # The GRPCController.Shutdown RPC did it: a clean exit, not SIGTERM/SIGKILL.
    assert plugin.exit_code == 0
    assert not [m for _, m in records.messages() if "sending SIG" in m], "Shutdown was ignored"


@dataclass(frozen=True)
class Crash:
    """A call during which the plugin dies, and what must be reported."""

    family: Family
    tls: bool
    stream: bool
    service: str
    exit_code: int
    text: str  # in the stderr tail
    chunks: int = 0  # sent before the crash
    chunks_certain: bool = False  # the plugin waits for them to arrive before dying
    env: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> Target:
        return Target(self.family, "unix", self.tls)


MISBEHAVE = FAMILY["go-misbehave"]
CRASHES = {
    "go-panic-unary": Crash(FAMILY["go-local"], False, False, "panic", 2, "panic: fixture panic"),
    "go-panic-stream-automtls": Crash(
        FAMILY["go-remote"], True, True, "panic", 2, "panic: fixture panic", chunks=1
    ),
    "go-misbehave-panic-in-call-automtls": Crash(
        MISBEHAVE,
        True,
        False,
        "echo",
        2,
        "panic: misbehave: panic in InvokeService",
        env=(("AOG_FIXTURE_MODE", "panic-in-call"),),
    ),
    "go-misbehave-exit-mid-stream": Crash(
        MISBEHAVE,
        False,
        True,
        "echo",
        3,
        "exiting mid-stream",
        chunks=2,
        chunks_certain=True,
        env=(("AOG_FIXTURE_MODE", "exit-mid-stream"),),
    ),
    "py-crash-unary-automtls": Crash(
        FAMILY["py-local"], True, False, "crash", 7, "crashing on purpose"
    ),
    "py-crash-stream": Crash(
        FAMILY["py-remote"], False, True, "crash", 7, "crashing on purpose", chunks=1
    ),
}


def _drain(stream: Iterable[StreamChunk], into: list[bytes]) -> None:
    for chunk in stream:
        into.append(chunk.data)


@pytest.mark.parametrize("crash", CRASHES.values(), ids=CRASHES.keys())
def test_crash_during_a_call_is_reported_with_its_stderr(
    crash: Crash, leak_check: LeakCheck, records: Records
) -> None:
    env = dict(crash.env)
    with crash.target.launch(leak_check, env=env, logger=records.logger) as plugin:
        client = plugin.client
        if crash.stream:
            received: list[bytes] = []
            with pytest.raises(PluginCrashedError) as crashed:
                _drain(client.invoke_service_stream(crash.service, b"{}", timeout=30), received)
            # A chunk sent just before a crash may die in flight, unless the plugin waits.
            assert len(received) == crash.chunks or (
                not crash.chunks_certain and len(received) < crash.chunks
            )
        else:
            with pytest.raises(PluginCrashedError) as crashed:
                client.invoke_service(crash.service, b"{}", timeout=30)
        error = crashed.value
        assert error.process_exited
        assert error.exit_code == crash.exit_code
        assert crash.text in error.stderr_tail
        assert plugin.exited
    if crash.text.startswith("panic: "):
        # go-plugin's rule: from the "panic:" line on, the stack is logged at ERROR.
        panic = records.wait_for("panic: ")
        assert panic.levelno == logging.ERROR
        stack = [r for r in records.records if r.getMessage().startswith("goroutine ")]
        assert stack
        assert all(r.levelno == logging.ERROR for r in stack)
        assert "goroutine " in error.stderr_tail
