"""PLUGIN_MULTIPLEX_GRPC with our host: provider calls, streams and big payloads (yamux
flow control), plugin stdio and refusal of a plugin that cannot multiplex."""

from __future__ import annotations

import json
import uuid

import pytest

from aog_plugins.errors import UnsupportedProtocolError
from tests.interop.conftest import Target, targets
from tests.interop.test_plugin_output import PY_ECHO, Sink
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.wait import wait_until


@pytest.mark.parametrize("target", targets(lambda f: f.id in ("go-local", "py-remote")))
def test_provider_calls_over_one_multiplexed_connection(
    target: Target, leak_check: LeakCheck
) -> None:
    family = target.family
    with target.launch(leak_check, multiplex=True) as plugin:
        assert plugin.handshake.multiplex
        plugin.ping()
        assert plugin.client.get_manifest().provider.name == family.provider_name
        marker = uuid.uuid4().hex
        reply = plugin.client.invoke_service(
            family.echo_service, family.echo_request(marker), timeout=30
        )
        assert marker in family.echoed(reply)
        service, request, count = family.stream
        chunks = list(
            plugin.client.invoke_service_stream(service, json.dumps(request).encode(), timeout=30)
        )
        assert len(chunks) == count
        # Far beyond yamux's 256 KiB stream window: only window updates get it across.
        assert family.big is not None
        size = 6 * 1024 * 1024 + 7
        big = plugin.client.invoke_service("big", json.dumps({"size": size}).encode(), timeout=60)
        assert big == family.big(size)
        # Shutdown must stop it: within a grace no loaded machine outruns (the default 2 s
        # was, and the SIGTERM that followed met a plugin already exiting: -15).
        plugin.kill(grace=60)
    assert plugin.exit_code == 0


def test_plugin_stdio_arrives_over_its_own_stream(leak_check: LeakCheck) -> None:
    out, err = Sink(), Sink()
    target = Target(PY_ECHO, "unix", True)
    with target.launch(leak_check, stdout=out, stderr=err, multiplex=True) as plugin:
        wait_until(lambda: out.data == b"echo plugin ready\n", 10, lambda: f"stdout: {out.data!r}")
        wait_until(
            lambda: err.data == b"echo plugin stderr note\n", 10, lambda: f"stderr: {err.data!r}"
        )
        plugin.ping()


def test_plugin_without_multiplexing_is_refused(leak_check: LeakCheck) -> None:
    from aog_plugins import RestartPolicy, launch

    with pytest.raises(UnsupportedProtocolError, match="does not support it") as failed:
        launch(
            plugin_cmd("misbehave.py", "no-mux"),
            multiplex=True,
            extra_env=leak_check.env,
            restart=RestartPolicy.never(),
        )
    assert failed.value.exit_code is None  # it was running: we stopped it
    # The diagnosis said "only gRPC plugins without broker multiplexing can be hosted",
    # the opposite of what the message (and the feature) says.
    assert "launch(multiplex=True)" in failed.value.diagnosis, failed.value.diagnosis
    assert "without broker multiplexing" not in str(failed.value)


def test_a_multiplexed_plugin_cannot_be_reattached(leak_check: LeakCheck) -> None:
    from aog_plugins.errors import ReattachError

    target = Target(PY_ECHO, "unix", False)
    with (
        target.launch(leak_check, multiplex=True) as plugin,
        pytest.raises(ReattachError, match="one connection"),
    ):
        plugin.reattach_config()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("bad-version", "yamux protocol error: unknown yamux version 1"),
        ("close", "the peer closed the connection"),
        ("huge-frame", "a data frame of 4294967295 bytes exceeds the receive window"),
    ],
    ids=["bad-version", "close", "huge-frame"],
)
def test_a_plugin_that_breaks_the_yamux_session_fails_its_start_at_once(
    mode: str, reason: str, leak_check: LeakCheck
) -> None:
    # The plugin lives on, but its one connection is gone: nothing can ever connect.
    # The start must say so now, naming why, not wait out start_timeout and blame the
    # address; the plugin is stopped and its socket dir removed (leak_check).
    from aog_plugins import RestartPolicy, launch
    from aog_plugins.errors import PluginConnectError

    with pytest.raises(PluginConnectError, match="multiplexed connection ended") as failed:
        launch(
            plugin_cmd("hostile_mux.py", mode),
            multiplex=True,
            start_timeout=30,
            extra_env=leak_check.env,
            restart=RestartPolicy.never(),
        )
    assert reason in str(failed.value)


@pytest.mark.parametrize("target", targets(lambda f: f.id == "py-remote"))
def test_a_plugin_whose_multiplexed_connection_ends_is_restarted(
    target: Target, leak_check: LeakCheck
) -> None:
    # Its one connection gone, a running plugin can never be reached again: every call
    # failed UNAVAILABLE and nothing restarted it. It is now stopped, and the restart
    # policy brings up a new process with a new connection. (A Go plugin exits by itself
    # when its connection ends: exit 0, which the default policy leaves EXITED.)
    import os
    import socket

    from aog_plugins import PluginEvent, PluginState, RestartPolicy

    events: list[PluginEvent] = []
    restart = RestartPolicy(backoff_base=0.05)
    with target.launch(
        leak_check, multiplex=True, on_event=events.append, restart=restart
    ) as plugin:
        plugin.ping()
        old = plugin.pid
        mux = plugin._current.mux
        assert mux is not None
        assert mux.session.transport is not None
        fd = mux.session.transport.get_extra_info("socket").fileno()
        # Both ends of the connection see it end; the plugin process lives on.
        with socket.socket(fileno=os.dup(fd)) as connection:
            connection.shutdown(socket.SHUT_RDWR)
        wait_until(
            lambda: plugin.pid != old and plugin.state is PluginState.RUNNING,
            60,
            "the plugin restarted on a new connection",
        )
        assert plugin.client.get_manifest(timeout=30).provider.name == target.family.provider_name
        backoff = next(e for e in events if e.new is PluginState.BACKOFF)
        assert "multiplexed connection ended" in backoff.reason
