"""The GRPCBroker from asyncio (``AsyncPlugin.broker``) against real plugins: the Go
broker fixture (P-521 certificates: AutoMTLS goes through the relay) and the Python one
(P-256: grpcio does the TLS), plaintext and AutoMTLS, with and without multiplexing.

The BrokerDemo service (proto/callback.proto): the host serves a Callback under a broker
id and the plugin dials it during a call and calls back; then the plugin serves one under
a fresh id and the host dials it, here as a ``grpc.aio`` channel."""

from __future__ import annotations

import os

import grpc
import grpc.aio
import pytest

from aog_plugins import PluginState, RestartPolicy
from aog_plugins._proto import callback_pb2, callback_pb2_grpc
from aog_plugins.aio import launch
from aog_plugins.errors import BrokerError
from tests.aio.conftest import run
from tests.interop.test_broker import Answer, Row
from tests.process.conftest import LeakCheck, plugin_cmd

ROWS = [
    Row(lang, "unix", tls, mux)
    for lang in ("go", "py")
    for tls in (False, True)
    for mux in (False, True)
]


async def call(channel: grpc.aio.Channel, text: str) -> str:
    reply = await callback_pb2_grpc.CallbackStub(channel).Call(
        callback_pb2.CallRequest(text=text), timeout=20
    )
    return reply.text


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_async_broker_both_ways(row: Row, leak_check: LeakCheck) -> None:
    async def main() -> None:
        async with await launch(
            row.argv(),
            auto_mtls=row.tls,
            extra_env=leak_check.env,
            restart=RestartPolicy.never(),
            multiplex=row.mux,
        ) as plugin:
            broker = plugin.broker
            assert plugin.broker is broker
            demo = callback_pb2_grpc.BrokerDemoStub(await plugin.channel())
            # Host serves, plugin dials during the call and calls back.
            first = broker.next_id()
            served = await broker.accept_and_serve(
                first,
                lambda s: callback_pb2_grpc.add_CallbackServicer_to_server(Answer("host: "), s),
            )
            reply = await demo.CallBack(
                callback_pb2.CallBackRequest(broker_id=first, text="hi"), timeout=30
            )
            assert reply.text == f"{row.prefix}host: hi"
            # Plugin serves, host dials: a grpc.aio channel, used concurrently.
            sid = (await demo.Serve(callback_pb2.ServeRequest(prefix="p: "), timeout=30)).broker_id
            channel = await broker.dial(sid)
            assert isinstance(channel, grpc.aio.Channel)
            replies = [await call(channel, str(i)) for i in range(3)]
            assert replies == ["p: 0", "p: 1", "p: 2"]
            # A second served id and a second dial work alongside the first.
            sid2 = (await demo.Serve(callback_pb2.ServeRequest(prefix="q: "), timeout=30)).broker_id
            assert await call(await broker.dial(sid2), "x") == "q: x"
            assert await call(channel, "still") == "p: still"
            address = served.address if served.network == "unix" else ""
            assert not address or os.path.exists(address)
        # The plugin is gone: so are the broker, its server's socket and its channels.
        assert broker.closed
        assert not address or not os.path.exists(address)
        with pytest.raises(BrokerError, match="closed"):
            await broker.dial(sid)
        with pytest.raises(BrokerError, match="closed"):
            await broker.accept_and_serve(broker.next_id(), lambda s: None)
        with pytest.raises((grpc.aio.UsageError, grpc.RpcError)):
            await call(channel, "after")

    run(main())


@pytest.mark.parametrize("mux", [False, True], ids=["direct", "mux"])
@pytest.mark.parametrize("lang", ["go", "py"])
def test_async_dial_of_an_unknown_id_is_a_typed_error(
    lang: str, mux: bool, leak_check: LeakCheck
) -> None:
    argv = Row(lang, "unix", True, mux).argv()

    async def main() -> None:
        async with await launch(
            argv,
            auto_mtls=True,
            extra_env=leak_check.env,
            restart=RestartPolicy.never(),
            multiplex=mux,
        ) as plugin:
            with pytest.raises(BrokerError, match="broker id 4242"):
                await plugin.broker.dial(4242, timeout=0.2)
            # The broker still works afterwards, and the loop was free meanwhile.
            demo = callback_pb2_grpc.BrokerDemoStub(await plugin.channel())
            sid = (await demo.Serve(callback_pb2.ServeRequest(prefix="ok "), timeout=30)).broker_id
            assert await call(await plugin.broker.dial(sid), "then") == "ok then"

    run(main())


def test_a_restarted_plugin_has_a_new_async_broker(leak_check: LeakCheck) -> None:
    async def main() -> None:
        async with await launch(
            plugin_cmd("broker_plugin.py"),
            auto_mtls=True,
            extra_env=leak_check.env,
            restart=RestartPolicy(max_restarts=3, backoff_base=0.1),
        ) as plugin:
            first, pid = plugin.broker, plugin.pid
            events = plugin.events()
            os.kill(pid, 9)
            async for event in events:
                if event.new is PluginState.RUNNING:
                    break
            assert first.closed
            second = plugin.broker
            assert second is not first
            assert not second.closed
            demo = callback_pb2_grpc.BrokerDemoStub(await plugin.channel())
            sid = (await demo.Serve(callback_pb2.ServeRequest(prefix="new "), timeout=30)).broker_id
            assert await call(await second.dial(sid), "one") == "new one"

    run(main())


def test_dial_timeouts_are_checked(leak_check: LeakCheck) -> None:
    # 0 or a negative timeout gave up at once as if the plugin served nothing, NaN waited
    # for ever (on a thread that stayed), infinity raised a bare OverflowError.
    from aog_plugins.errors import ConfigurationError

    async def main() -> None:
        argv = Row("py", "unix", False, False).argv()
        async with await launch(argv, extra_env=leak_check.env) as plugin:
            for bad in (0, -1.0, True, float("nan")):
                with pytest.raises(ConfigurationError, match="timeout"):
                    await plugin.broker.dial(4242, timeout=bad)
                with pytest.raises(ConfigurationError, match="timeout"):
                    plugin.plugin.broker.dial(4242, timeout=bad)
            demo = callback_pb2_grpc.BrokerDemoStub(await plugin.channel())
            sid = (await demo.Serve(callback_pb2.ServeRequest(prefix="ok "), timeout=30)).broker_id
            endless = await plugin.broker.dial(sid, timeout=float("inf"))
            assert await call(endless, "then") == "ok then"

    run(main())
