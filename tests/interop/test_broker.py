"""The GRPCBroker both ways, against real plugins and go-plugin's real host.

Every row runs the BrokerDemo service (proto/callback.proto): the host serves a Callback
under a broker id and the plugin dials it during a call and calls back; then the plugin
serves a Callback under a fresh id and the host dials it. Our host x {Go plugin, Python
plugin} and go-plugin's host x {Go plugin, Python plugin}, over unix (and TCP for the
Python plugin), plaintext and AutoMTLS (Go's P-521 certificates go through the relay),
each with and without gRPC broker multiplexing (PLUGIN_MULTIPLEX_GRPC: one yamux
connection carries everything, sub-connections are knocked-for streams).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from aog_plugins import RestartPolicy, launch
from aog_plugins._proto import callback_pb2, callback_pb2_grpc
from aog_plugins.errors import BrokerError
from tests.gofixtures.conftest import RunHost
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.gobuild import go_binaries
from tests.support.wait import wait_until


@dataclass(frozen=True)
class Row:
    lang: str
    network: str
    tls: bool
    mux: bool

    @property
    def id(self) -> str:
        mode = "automtls" if self.tls else "plaintext"
        return f"{self.lang}-{self.network}-{mode}{'-mux' if self.mux else ''}"

    @property
    def prefix(self) -> str:
        return f"{self.lang}-plugin got "

    def argv(self) -> list[str]:
        if self.lang == "py":
            return plugin_cmd("broker_plugin.py")
        return [str(go_binaries().aog_provider)]


ROWS = [
    Row(lang, network, tls, mux)
    for lang, networks in (("go", ("unix",)), ("py", ("unix", "tcp")))
    for network in networks
    for tls in (False, True)
    for mux in (False, True)
]


def rows() -> list[Any]:
    return [pytest.param(r, id=r.id) for r in ROWS]


class Answer(callback_pb2_grpc.CallbackServicer):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def Call(
        self, request: callback_pb2.CallRequest, context: grpc.ServicerContext
    ) -> callback_pb2.CallReply:
        return callback_pb2.CallReply(text=self.prefix + request.text)


def call(channel: grpc.Channel, text: str) -> str:
    reply = callback_pb2_grpc.CallbackStub(channel).Call(
        callback_pb2.CallRequest(text=text), timeout=20
    )
    return reply.text


@pytest.mark.parametrize("row", rows())
def test_our_host_broker_both_ways(row: Row, leak_check: LeakCheck) -> None:
    env = {**leak_check.env, "AOG_PLUGINS_NETWORK": row.network}
    with launch(
        row.argv(),
        auto_mtls=row.tls,
        extra_env=env,
        restart=RestartPolicy.never(),
        multiplex=row.mux,
    ) as plugin:
        assert plugin.handshake.multiplex is row.mux
        broker = plugin.broker
        demo = callback_pb2_grpc.BrokerDemoStub(plugin.channel)
        # Host serves, plugin dials during the call and calls back.
        first = broker.next_id()
        served = broker.accept_and_serve(
            first,
            lambda s: callback_pb2_grpc.add_CallbackServicer_to_server(Answer("host: "), s),
        )
        assert served.network == ("unix" if row.mux else row.network)
        reply = demo.CallBack(callback_pb2.CallBackRequest(broker_id=first, text="hi"), timeout=30)
        assert reply.text == f"{row.prefix}host: hi"
        # Ids are fresh; a second server on another id works alongside the first.
        second = broker.next_id()
        assert second != first
        broker.accept_and_serve(
            second,
            lambda s: callback_pb2_grpc.add_CallbackServicer_to_server(Answer("again: "), s),
        )
        reply = demo.CallBack(callback_pb2.CallBackRequest(broker_id=second, text="x"), timeout=30)
        assert reply.text == f"{row.prefix}again: x"
        # Plugin serves, host dials.
        sid = demo.Serve(callback_pb2.ServeRequest(prefix="plugin: "), timeout=30).broker_id
        channel = broker.dial(sid)
        assert call(channel, "yo") == "plugin: yo"
        assert call(channel, "again") == "plugin: again"
        local = served.network == "unix"
        assert not local or os.path.exists(served.address)
        if local and not row.mux:
            socket_dir = os.path.dirname(plugin.handshake.address)
            assert os.path.dirname(served.address) == socket_dir
    # The plugin is gone: so are the broker's servers, sockets and channels.
    assert broker.closed
    assert not local or not os.path.exists(served.address)
    with pytest.raises(BrokerError, match="closed"):
        broker.dial(sid)
    with pytest.raises(BrokerError, match="closed"):
        broker.accept_and_serve(broker.next_id(), lambda s: None)
    with pytest.raises((ValueError, grpc.RpcError)):
        call(channel, "after")


@pytest.mark.parametrize("row", [r for r in rows() if r.values[0].network == "unix"])
def test_dial_unknown_id_is_a_typed_error(
    row: Row, leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    # Multiplexed, the dial knocks for the id before it returns: a Python plugin refuses
    # the knock, a Go plugin never answers one for an id it does not serve. Either way
    # the dial fails, instead of handing back a channel whose calls hang.
    with launch(
        row.argv(),
        auto_mtls=row.tls,
        extra_env=leak_check.env,
        restart=RestartPolicy.never(),
        multiplex=row.mux,
    ) as plugin:
        with pytest.raises(BrokerError, match="broker id 4242"):
            plugin.broker.dial(4242, timeout=0.2)
        # The broker still works afterwards.
        sid = callback_pb2_grpc.BrokerDemoStub(plugin.channel).Serve(
            callback_pb2.ServeRequest(prefix="ok "), timeout=30
        )
        assert call(plugin.broker.dial(sid.broker_id), "then") == "ok then"
    gc.collect()  # an unretrieved task exception is logged when the task is collected
    assert "exception was never retrieved" not in caplog.text


def test_a_plugins_dial_of_an_unknown_id_says_how_long_it_waited(leak_check: LeakCheck) -> None:
    # Its wait spent the whole timeout before the final try, which then said "(0s)".
    with launch(
        plugin_cmd("broker_plugin.py"), extra_env=leak_check.env, restart=RestartPolicy.never()
    ) as plugin:
        demo = callback_pb2_grpc.BrokerDemoStub(plugin.channel)
        with pytest.raises(grpc.RpcError) as failed:
            demo.CallBack(callback_pb2.CallBackRequest(broker_id=4242, text="x"), timeout=60)
        details = failed.value.details() if isinstance(failed.value, grpc.Call) else ""
        assert "broker id 4242 (5s)" in (details or ""), details


@pytest.mark.parametrize("row", rows())
def test_go_host_broker_both_ways(row: Row, run_host: RunHost) -> None:
    flags = (
        ["-broker", "hello"] + (["-automtls"] if row.tls else []) + (["-mux"] if row.mux else [])
    )
    result = run_host(*flags, plugin=row.argv(), env={"AOG_PLUGINS_NETWORK": row.network})
    assert result.start["network"] == row.network
    (broker,) = result.of("broker")
    assert broker == {
        "event": "broker",
        "callback": f"{row.prefix}go-host answered hello",
        "served": "plugin answered hello",
    }


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "automtls"])
def test_plugin_closes_its_sub_servers_when_the_host_stream_ends(
    tls: bool, leak_check: LeakCheck
) -> None:
    with launch(
        plugin_cmd("broker_plugin.py"),
        auto_mtls=tls,
        extra_env=leak_check.env,
        restart=RestartPolicy.never(),
    ) as plugin:
        socket_dir = os.path.dirname(plugin.handshake.address)
        before = set(os.listdir(socket_dir))
        demo = callback_pb2_grpc.BrokerDemoStub(plugin.channel)
        sid = demo.Serve(callback_pb2.ServeRequest(prefix="p: "), timeout=30).broker_id
        assert call(plugin.broker.dial(sid), "x") == "p: x"
        served = set(os.listdir(socket_dir)) - before
        assert served  # the plugin's sub-server socket (and, with P-256 TLS, nothing else)
        plugin.broker.close()  # the host's broker stream ends; the plugin keeps running
        wait_until(
            lambda: not (set(os.listdir(socket_dir)) & served),
            20,
            lambda: f"the plugin's broker sockets are still there: {os.listdir(socket_dir)}",
        )
        plugin.ping()


def test_a_second_host_gets_its_own_broker_and_the_first_keeps_working(
    leak_check: LeakCheck,
) -> None:
    from aog_plugins import attach

    def callback(plugin_channel: grpc.Channel, broker: Any, prefix: str) -> str:
        sid = broker.next_id()
        broker.accept_and_serve(
            sid, lambda s: callback_pb2_grpc.add_CallbackServicer_to_server(Answer(prefix), s)
        )
        demo = callback_pb2_grpc.BrokerDemoStub(plugin_channel)
        request = callback_pb2.CallBackRequest(broker_id=sid, text="hi")
        return str(demo.CallBack(request, timeout=30).text)

    with launch(
        plugin_cmd("broker_plugin.py"),
        auto_mtls=True,
        extra_env=leak_check.env,
        restart=RestartPolicy.never(),
    ) as first:
        assert callback(first.channel, first.broker, "first: ") == "py-plugin got first: hi"
        second = attach(first.reattach_config())
        with pytest.raises(BrokerError, match="broker=True"):
            _ = second.broker
        second.detach()
        second = attach(first.reattach_config(), broker=True)
        # Both hosts number their ids from 1; the plugin serves the newest stream.
        assert callback(second.channel, second.broker, "second: ") == "py-plugin got second: hi"
        second.detach()
        assert not first.exited
        # The second host's stream ended: the first host's broker is the plugin's again.
        assert callback(first.channel, first.broker, "again: ") == "py-plugin got again: hi"
    assert first.exit_code == 0
