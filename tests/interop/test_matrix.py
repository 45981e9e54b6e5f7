"""The same stateless cases over every plugin x network x plaintext/AutoMTLS row.

Each row's plugin is started once per module (see ``PluginPool``) and must exit with code
0 on Shutdown at the end. Stateful sequences and crashes are in ``test_lifecycle.py``.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

from aog_plugins.errors import PluginCallError, PluginError
from aog_plugins.handshake import certificate_curve, grpcio_can_verify
from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    LoadRequest,
    PullModelRequest,
    UnloadModelRequest,
)
from tests.interop.conftest import PluginPool, Target, targets


@pytest.mark.parametrize("target", targets())
def test_handshake_fields(pool: PluginPool, target: Target) -> None:
    plugin = pool.get(target)
    line = plugin.handshake
    assert (line.core_version, line.app_version, line.protocol) == (1, 1, "grpc")
    assert line.network == target.network
    if target.network == "unix":
        assert os.path.isabs(line.address)
    else:
        host, _, port = line.address.rpartition(":")
        assert host == "127.0.0.1"
        assert 10000 <= int(port) <= 25000  # PLUGIN_MIN_PORT..PLUGIN_MAX_PORT
    if not target.tls:
        assert line.server_cert is None
        return
    assert line.server_cert is not None
    assert certificate_curve(line.server_cert) == target.family.cert_curve
    # A Go plugin's P-521 certificate is beyond grpcio: these rows go through our relay.
    assert grpcio_can_verify(line.server_cert) is (target.family.lang == "py")


@pytest.mark.parametrize("target", targets())
def test_health_and_manifest(pool: PluginPool, target: Target) -> None:
    plugin = pool.get(target)
    plugin.ping()  # grpc.health.v1, service "plugin"
    plugin.client.health_check()  # ProviderService.HealthCheck
    manifest = plugin.client.get_manifest()
    assert manifest.provider.name == target.family.provider_name
    assert manifest.provider.type == (target.family.kind or "remote")
    models = plugin.client.get_support_model_list()
    expected = [(s.service_name, m) for s in manifest.services for m in s.support_models]
    assert [(m.service_name, m.name) for m in models] == expected
    for entry in models:
        assert entry.id == f"{manifest.provider.name}:{entry.service_name}:{entry.name}"


@pytest.mark.parametrize("target", targets())
def test_unary_echo(pool: PluginPool, target: Target) -> None:
    family = target.family
    marker = f"marker-{uuid.uuid4().hex}"
    reply = pool.get(target).client.invoke_service(
        family.echo_service, family.echo_request(marker), timeout=30
    )
    assert marker in family.echoed(reply)


@pytest.mark.parametrize("target", targets(lambda f: f.failing))
def test_failure_codes(pool: PluginPool, target: Target) -> None:
    client = pool.get(target).client
    with pytest.raises(PluginError) as failed:
        client.invoke_service("fail", b"{}", timeout=30)
    assert failed.value.code == 4001
    with pytest.raises(PluginError) as unknown:
        client.invoke_service("no-such-service", b"{}", timeout=30)
    assert unknown.value.code == 4000


@pytest.mark.parametrize("target", targets(lambda f: f.big is not None))
def test_big_response_crosses_grpcio_4_mib_default(pool: PluginPool, target: Target) -> None:
    assert target.family.big is not None
    size = 6 * 1024 * 1024 + 7
    request = json.dumps({"size": size}).encode()
    reply = pool.get(target).client.invoke_service("big", request, timeout=60)
    assert reply == target.family.big(size)


@pytest.mark.parametrize("target", targets())
def test_stream_ends_after_the_final_chunk(pool: PluginPool, target: Target) -> None:
    service, request, count = target.family.stream
    body = json.dumps(request).encode()
    chunks = list(pool.get(target).client.invoke_service_stream(service, body, timeout=30))
    assert len(chunks) == count
    assert [c.is_final for c in chunks] == [False] * (count - 1) + [True]
    assert all(c.data for c in chunks[:-1])


@pytest.mark.parametrize("target", targets(lambda f: f.no_final is not None))
def test_stream_may_end_without_a_final_chunk(pool: PluginPool, target: Target) -> None:
    service = target.family.stream[0]
    body = json.dumps(target.family.no_final).encode()
    chunks = list(pool.get(target).client.invoke_service_stream(service, body, timeout=30))
    assert len(chunks) == 2
    assert not any(c.is_final for c in chunks)
    assert [c.metadata.get("content-type") for c in chunks] == ["text/event-stream"] * 2


@pytest.mark.parametrize("target", targets(lambda f: f.mid_stream_failure is not None))
def test_stream_failure_chunk_raises_after_the_good_ones(pool: PluginPool, target: Target) -> None:
    client = pool.get(target).client
    assert target.family.mid_stream_failure is not None
    stream = client.invoke_service_stream(target.family.mid_stream_failure, b"{}", timeout=30)
    received = [next(stream).data, next(stream).data]
    with pytest.raises(PluginError) as failed:
        next(stream)
    assert failed.value.code == 4001
    assert all(received)
    with pytest.raises(PluginError) as at_once:
        next(iter(client.invoke_service_stream("fail", b"{}", timeout=30)))
    assert at_once.value.code == 4001
    with pytest.raises(PluginError) as unknown:
        next(iter(client.invoke_service_stream("no-such-service", b"{}", timeout=30)))
    assert unknown.value.code == 4000


@pytest.mark.parametrize("target", targets(lambda f: f.bidi))
def test_bidi_round_trip(pool: PluginPool, target: Target) -> None:
    client = pool.get(target).client
    conn = f"ws-{uuid.uuid4().hex[:8]}"
    sender, replies = client.invoke_service_bidi("realtime", "token-1", ws_conn_id=conn, timeout=30)
    sender.send("hello")
    sender.send(b"\x00\x01\xff", BidiMessage.BINARY)
    sender.send(b"p", BidiMessage.PING)
    sender.send(b"bye", BidiMessage.CLOSE)
    got = [(m.message_type, m.data, m.metadata["ws_conn_id"]) for m in replies]
    sender.close()
    assert got == [
        ("text", b"echo: hello", conn),
        ("binary", b"\x00\x01\xff", conn),
        ("pong", b"p", conn),
        ("close", b"bye", conn),
    ]
    # The same through the channel-style bridge (Go's InvokeServiceBidirectional).
    inbound = [BidiMessage(data=b"a"), BidiMessage(data=b"bye", message_type=BidiMessage.CLOSE)]
    bridged = client.invoke_service_bidirectional("realtime", conn, "token-1", inbound, timeout=30)
    assert [(m.message_type, m.data) for m in bridged] == [("text", b"echo: a"), ("close", b"bye")]


@pytest.mark.parametrize("target", targets(lambda f: f.bidi))
def test_bidi_failures(pool: PluginPool, target: Target) -> None:
    client = pool.get(target).client
    assert target.family.bidi_error is not None
    kind, data, code = target.family.bidi_error
    sender, replies = client.invoke_service_bidi("realtime", ws_conn_id="c1", timeout=30)
    sender.send("first")
    assert next(replies).data == b"echo: first"
    sender.send(data, kind)
    with pytest.raises(PluginError) as bad_message:
        next(replies)
    assert bad_message.value.code == code
    sender.cancel()
    for service, expected in (("fail", 4001), ("nope", target.family.bidi_unknown_code)):
        sender, replies = client.invoke_service_bidi(service, timeout=30)
        sender.send("hi")
        with pytest.raises(PluginError) as refused:
            next(replies)
        assert refused.value.code == expected
        sender.cancel()


ENGINE_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("check_engine", ()),
    ("start_engine", ("daemon",)),
    ("stop_engine", ()),
    ("install_engine", ()),
    ("init_env", ()),
    ("upgrade_engine", ()),
    ("get_config", ()),
    ("list_models", ()),
    ("get_running_models", ()),
    ("get_version", ()),
]


@pytest.mark.parametrize("target", targets(lambda f: f.kind))
def test_kind_gating_answers_code_11(pool: PluginPool, target: Target) -> None:
    """Engine RPCs on a remote plugin and auth RPCs on a local one: 11 and the SDK's text."""
    client = pool.get(target).client
    if target.family.kind == "remote":
        text = "not a local plugin"
        calls = [
            *ENGINE_CALLS,
            ("pull_model", (PullModelRequest(model="m"),)),
            ("delete_model", (DeleteRequest(model="m"),)),
            ("load_model", (LoadRequest(model="m"),)),
            ("unload_model", (UnloadModelRequest(models=["m"]),)),
        ]
    else:
        text = "not a remote plugin"
        calls = [
            ("set_auth", ("apikey", {"api_key": "k"})),
            ("validate_auth", ()),
            ("refresh_auth", ()),
        ]
    for name, args in calls:
        with pytest.raises(PluginError) as gated:
            getattr(client, name)(*args, timeout=30)
        assert (gated.value.code, gated.value.message) == (11, text), name
    if target.family.kind == "remote":
        with pytest.raises(PluginError) as gated:
            list(client.pull_model_stream(PullModelRequest(model="m"), timeout=30))
        assert (gated.value.code, gated.value.message) == (11, text)


@pytest.mark.parametrize("target", targets(lambda f: f.kind and not f.bidi))
def test_bidi_on_a_plugin_without_it(pool: PluginPool, target: Target) -> None:
    sender, replies = pool.get(target).client.invoke_service_bidi("chat", timeout=30)
    sender.send("hi")
    with pytest.raises(PluginError) as refused:
        next(replies)
    assert (refused.value.code, refused.value.message) == (
        11,
        "plugin does not implement bidirectional interface",
    )
    sender.cancel()


@pytest.mark.parametrize("target", targets(lambda f: not f.kind))
def test_rpcs_a_plugin_lacks_are_typed_unimplemented(pool: PluginPool, target: Target) -> None:
    client = pool.get(target).client
    for call in (client.check_engine, client.validate_auth, client.get_operate_status):
        with pytest.raises(PluginCallError) as missing:
            call(timeout=30)
        assert missing.value.code == "UNIMPLEMENTED"
        assert not missing.value.process_exited
    pool.get(target).ping()
