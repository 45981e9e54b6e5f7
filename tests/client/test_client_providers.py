"""Every GRPCProviderClient method against the Python fixture providers (real processes)."""

from __future__ import annotations

import gc
import json
import logging
import queue
import signal
import weakref
from collections.abc import Iterator

import pytest

from aog_plugins import Plugin, RestartPolicy, launch
from aog_plugins.client import BidiSender, ResponseStream
from aog_plugins.errors import PluginCrashedError, PluginError, PluginFatalError
from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    EngineVersionResponse,
    LoadRequest,
    ProgressResponse,
    PullModelRequest,
    StreamChunk,
    UnloadModelRequest,
)
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.wait import wait_until


@pytest.fixture
def local(leak_check: LeakCheck) -> Iterator[Plugin]:
    with launch(
        plugin_cmd("local_provider.py"), restart=RestartPolicy.never(), extra_env=leak_check.env
    ) as plugin:
        yield plugin


@pytest.fixture
def remote(leak_check: LeakCheck) -> Iterator[Plugin]:
    with launch(
        plugin_cmd("remote_provider.py"), restart=RestartPolicy.never(), extra_env=leak_check.env
    ) as plugin:
        yield plugin


def test_local_engine_lifecycle(local: Plugin) -> None:
    client = local.client
    assert client.get_manifest().provider.type == "local"
    assert client.check_engine() is False
    with pytest.raises(PluginError) as info:
        client.start_engine("daemon")
    assert info.value.code == 2001
    client.install_engine()
    with pytest.raises(PluginError):
        client.install_engine()  # again without cover
    client.install_engine(cover=True)
    assert client.check_engine() is True
    client.init_env()
    client.start_engine("daemon")
    client.upgrade_engine()
    client.stop_engine()
    assert client.get_config().recommend_model
    assert client.get_version().version
    asked = client.get_version(EngineVersionResponse(version="9.9"))
    assert asked.version


def test_model_management_and_progress_callback(local: Plugin) -> None:
    client = local.client
    seen: list[ProgressResponse] = []
    last = client.pull_model(PullModelRequest(model="tiny:1b"), progress=seen.append)
    assert last.status == "success"
    assert seen[0].status == "pulling manifest"
    assert any(p.total and p.completed == p.total for p in seen)
    assert client.pull_model(PullModelRequest(model="other:2b")).status == "success"
    items = list(client.pull_model_stream(PullModelRequest(model="third:3b")))
    assert items[-1].status == "success"
    names = {m.name for m in client.list_models().models}
    assert {"tiny:1b", "other:2b", "third:3b"} <= names
    client.load_model(LoadRequest(model="tiny:1b"))
    assert [m.name for m in client.get_running_models().models] == ["tiny:1b"]
    client.unload_model(UnloadModelRequest(models=["tiny:1b"]))
    assert client.get_running_models().models == []
    client.delete_model(DeleteRequest(model="other:2b"))
    assert "other:2b" not in {m.name for m in client.list_models().models}
    with pytest.raises(PluginError) as info:
        client.load_model(LoadRequest(model="never-pulled"))
    assert info.value.code == 3000
    with pytest.raises(PluginError) as info:
        list(client.pull_model_stream(PullModelRequest(model="broken-1")))
    assert info.value.code == 3001


def test_wrong_kind_answers_code_11(local: Plugin, remote: Plugin) -> None:
    with pytest.raises(PluginError, match="not a remote plugin") as info:
        local.client.validate_auth()
    assert info.value.code == 11
    with pytest.raises(PluginError, match="not a local plugin"):
        remote.client.check_engine()
    with pytest.raises(PluginError, match="not a local plugin"):
        list(remote.client.pull_model_stream(PullModelRequest(model="x")))


def test_operate_status_and_health(local: Plugin) -> None:
    client = local.client
    client.set_operate_status(1)
    assert client.get_operate_status() == 1
    client.health_check()
    client.set_operate_status(2)
    with pytest.raises(PluginError) as info:
        client.health_check()
    assert info.value.code == 1005


def test_remote_auth_and_calls(remote: Plugin) -> None:
    client = remote.client
    with pytest.raises(PluginError) as info:
        client.validate_auth()
    assert info.value.code == 1002
    client.set_auth("apikey", {"api_key": "k-123"})
    client.validate_auth()
    client.refresh_auth()
    reply = json.loads(client.invoke_service("chat", b'{"messages": [{"content": "hi"}]}', "tok"))
    assert reply["auth_info"] == "tok"
    assert json.loads(client.invoke_service("auth", b"{}"))["refreshes"] == 1


def test_support_model_list_follows_the_manifest(remote: Plugin) -> None:
    client = remote.client
    manifest = client.get_manifest()
    entries = client.get_support_model_list()
    expected = sum(len(s.support_models) for s in manifest.services)
    assert len(entries) == expected


def test_stream_end_and_failure_rules(remote: Plugin) -> None:
    client = remote.client
    chunks = list(client.invoke_service_stream("chat", b'{"chunks": 4}'))
    assert len(chunks) == 5
    assert chunks[-1].is_final
    assert chunks[-1].data == b"data: [DONE]\n\n"
    # Without a final chunk the stream simply ends.
    assert len(list(client.invoke_service_stream("chat", b'{"chunks": 2, "final": false}'))) == 2
    got: list[StreamChunk] = []
    with pytest.raises(PluginError) as info:
        got.extend(client.invoke_service_stream("fail-stream", b"{}"))
    assert info.value.code == 4001
    assert len(got) == 2  # the two chunks before the failure arrived intact
    with pytest.raises(PluginError) as info:
        list(client.invoke_service_stream("fail-chunk", b"{}"))
    assert info.value.code == 4004


def test_caller_cancels_a_stream(remote: Plugin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stream = remote.client.invoke_service_stream("slow-stream", b'{"interval": 0.05}')
    for index, _ in enumerate(stream):
        if index == 2:
            break
    stream.close()
    wait_until(lambda: "stream cancelled" in caplog.text, 5, "the plugin to log the cancel")


def test_bidi_rules_and_echo(remote: Plugin) -> None:
    client = remote.client
    sender, replies = client.invoke_service_bidi("realtime", "auth-x", ws_conn_id="ws-1")
    sender.send("whoami")
    who = json.loads(next(replies).data)
    assert who["ws_conn_id"] == "ws-1"
    assert who["auth_info"] == "auth-x"
    sender.send("hello")
    assert next(replies).data == b"echo: hello"
    sender.send(BidiMessage(data=b"p", message_type="ping"))
    pong = next(replies)
    assert pong.message_type == "pong"
    sender.send("error-item")
    with pytest.raises(PluginError) as info:
        next(replies)
    assert info.value.code == 4004
    sender.cancel()


def test_bidi_close_and_bridge(remote: Plugin) -> None:
    inbound: queue.Queue[BidiMessage | None] = queue.Queue()
    for text in ("one", "two"):
        inbound.put(BidiMessage(data=text.encode(), message_type="text"))
    inbound.put(BidiMessage(data=b"", message_type="close"))
    replies = list(remote.client.invoke_service_bidirectional("realtime", "ws-9", "", inbound))
    assert [r.data for r in replies[:2]] == [b"echo: one", b"echo: two"]
    assert replies[-1].message_type == "close"
    out: queue.Queue[BidiMessage | None] = queue.Queue()
    remote.client.invoke_service_bidirectional(
        "realtime", "ws-10", "", [BidiMessage(data=b"x", message_type="text")], outbound=out
    )
    assert out.get(timeout=5) is not None
    assert out.get(timeout=5) is None


def test_bidi_bridge_with_a_failing_inbound_logs_it(
    remote: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    # As the asyncio client does (docs/asyncio.md): the plugin sees the end of what is
    # sent, its replies still come, and the error is logged. It escaped the bridge's
    # thread instead, to threading.excepthook ("Exception in thread aog-bidi-pump").
    def inbound() -> Iterator[BidiMessage]:
        yield BidiMessage(data=b"one", message_type="text")
        raise ValueError("the caller's source broke")

    with caplog.at_level(logging.ERROR, logger="aog_plugins.client"):
        replies = remote.client.invoke_service_bidirectional(
            "realtime", "ws-11", "", inbound(), timeout=60
        )
        assert [r.data for r in replies] == [b"echo: one"]
    assert "the caller's source broke" in caplog.text


def test_a_bidi_call_left_unclosed_leaves_no_thread(remote: Plugin) -> None:
    # grpcio reads a bidi call's requests on a thread of its own, which waited in the
    # sender's queue for ever when the caller cancelled the replies (or dropped the call)
    # without close(): a thread lost per call, holding the sender. The call's end now
    # ends the requests.
    def open_call() -> tuple[BidiSender, ResponseStream[BidiMessage]]:
        sender, replies = remote.client.invoke_service_bidi("realtime", timeout=60)
        sender.send("hello")
        assert next(replies).data == b"echo: hello"
        return sender, replies

    senders: list[weakref.ref[BidiSender]] = []
    for cancel in (True, False):
        for _ in range(3):
            sender, replies = open_call()
            if cancel:
                replies.cancel()
            senders.append(weakref.ref(sender))
            del sender, replies  # left unclosed: a dropped call is collected, so cancelled

    def all_freed() -> bool:
        gc.collect()
        return not any(ref() for ref in senders)

    wait_until(all_freed, 30, "the threads reading the requests to let go of the senders")
    sender, replies = open_call()
    replies.cancel()
    sender.send("dropped: the call is over")  # as before: no error, nothing sent


def test_bidi_failure_from_the_plugin(remote: Plugin) -> None:
    sender, replies = remote.client.invoke_service_bidi("realtime")
    sender.send("boom")
    with pytest.raises(PluginError) as info:
        list(replies)
    assert info.value.code == 11


def test_crash_mid_call_is_typed(remote: Plugin) -> None:
    with pytest.raises(PluginCrashedError) as info:
        remote.client.invoke_service("crash", b"{}")
    assert info.value.exit_code == 7


def test_a_segfault_mid_call_shows_its_python_traceback(remote: Plugin) -> None:
    # A plugin killed by SIGSEGV (a broken C extension) used to leave no trace on stderr:
    # the host could only say "killed by SIGSEGV". Our plugin side turns faulthandler on.
    with pytest.raises(PluginCrashedError) as info:
        remote.client.invoke_service("crash", b'{"segfault": true}')
    assert info.value.exit_code == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in info.value.stderr_tail
    assert "failure_response" in info.value.stderr_tail  # the frame it died in
    # The next call (no restart) says how the plugin ended, not only that it did.
    with pytest.raises(PluginFatalError) as fatal:
        remote.client.invoke_service("chat", b"{}")
    assert "killed by SIGSEGV" in str(fatal.value)
    assert "Fatal Python error: Segmentation fault" in str(fatal.value)


def test_big_response(local: Plugin) -> None:
    size = 16 << 20
    data = local.client.invoke_service("big", json.dumps({"size": size}).encode(), timeout=60)
    assert len(data) == size
    assert data[:256] == bytes(range(256))
