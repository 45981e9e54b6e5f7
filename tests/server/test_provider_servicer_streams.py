"""ProviderServicer's stream end rules, errors, bidi first-message rules and cancellation,
served in-process (real grpc.server and channel) so generator closing can be observed."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from aog_plugins._proto import provider_pb2 as pb
from tests.server.test_provider_servicer import Full, Stub, T, serve
from tests.server.test_provider_support import (
    Sender,
    bidi_first,
    collect,
    rpc_error,
    streaming,
    text,
)

__all__ = ["serve"]


def _stream(stub: Stub, service: str) -> list[tuple[int, str, bytes, bool]]:
    request = pb.InvokeServiceRequest(service_name=service)
    return [
        (c.code, c.message, c.chunk_data, c.is_final)
        for c in stub.InvokeServiceStream(request, timeout=T)
    ]


def test_stream_chunks_go_out_with_code_0_and_metadata(serve: Callable[[object], Stub]) -> None:
    stub = serve(Full())
    chunks = list(stub.InvokeServiceStream(pb.InvokeServiceRequest(service_name="x"), timeout=T))
    assert chunks[0].metadata == {"k": "v"}
    # No final chunk from the provider: the stream just ends, nothing is made up.
    assert _stream(stub, "plain") == [(0, "success", b"a", False), (0, "success", b"c", False)]


def test_stream_ends_at_the_final_chunk_and_closes_the_generator(
    serve: Callable[[object], Stub],
) -> None:
    provider = Full()
    stub = serve(provider)
    assert _stream(stub, "final-then-more") == [
        (0, "success", b"a", False),
        (0, "success", b"b", True),
    ]
    assert provider.closed.wait(T)


@pytest.mark.parametrize(
    ("service", "sent", "last"),
    [
        ("raise-first", 0, (4002, "upstream timeout")),
        ("raise-mid", 1, (11, "ValueError: mid")),
        ("interrupt-mid", 1, (11, "KeyboardInterrupt")),  # used to go unanswered
        ("error-chunk", 1, (4004, "bad chunk")),
        # Was "AttributeError: 'bytes' object has no attribute 'error'":
        (
            "wrong-item",
            1,
            (11, "TypeError: invoke_service_stream yielded bytes, not a StreamChunk"),
        ),
    ],
)
def test_stream_failures_end_with_a_final_error_chunk_and_grpc_ok(
    serve: Callable[[object], Stub], service: str, sent: int, last: tuple[int, str]
) -> None:
    chunks = _stream(serve(Full()), service)
    assert len(chunks) == sent + 1
    assert chunks[-1] == (*last, b"", True)


def test_a_generator_whose_finally_raises_still_ends_the_stream(
    serve: Callable[[object], Stub],
) -> None:
    # Closing it raises CancelledError (a BaseException): the call used to go unanswered.
    provider = Full()
    assert _stream(serve(provider), "final-then-finally-raises") == [
        (0, "success", b"a", False),
        (0, "success", b"b", True),
    ]
    assert provider.closed.wait(T)


def test_cancelling_a_stream_closes_the_provider_generator(
    serve: Callable[[object], Stub],
) -> None:
    provider = Full()
    stub = serve(provider)
    call = streaming(
        stub.InvokeServiceStream(pb.InvokeServiceRequest(service_name="forever"), timeout=T)
    )
    assert next(call).chunk_data == b"a"
    assert next(call).chunk_data == b"tick"
    call.cancel()
    assert provider.closed.wait(2.0)


def test_pull_stream_sends_items_as_json_data(serve: Callable[[object], Stub]) -> None:
    stub = serve(Full())
    items = list(stub.PullModelStream(pb.PullModelStreamRequest(request_json=b'{"model":"m"}')))
    assert [(i.code, i.message, i.data) for i in items] == [
        (0, "success", b'{"status":"raw"}'),
        (0, "success", b'{"status":"downloading","total":10,"completed":5}'),
        (0, "success", b'{"status":"success"}'),
    ]


@pytest.mark.parametrize(
    ("model", "sent", "message"),
    [("fail-first", 0, "no such registry"), ("fail-mid", 2, "connection reset")],
)
def test_pull_stream_failure_is_an_error_item_then_grpc_unknown(
    serve: Callable[[object], Stub], model: str, sent: int, message: str
) -> None:
    stub = serve(Full())
    received: list[pb.PullModelStreamResponse] = []
    request = pb.PullModelStreamRequest(request_json=f'{{"model":"{model}"}}'.encode())
    call = streaming(stub.PullModelStream(request, timeout=T))
    with pytest.raises(grpc.RpcError) as info:
        collect(call, received)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() == message
    assert len(received) == sent + 1
    assert (received[-1].code, received[-1].message, received[-1].data) == (3001, message, b"")


def test_pull_stream_with_bad_json_is_one_error_item_and_grpc_ok(
    serve: Callable[[object], Stub],
) -> None:
    items = list(serve(Full()).PullModelStream(pb.PullModelStreamRequest(request_json=b"nope")))
    assert len(items) == 1
    assert items[0].code == 11
    assert items[0].message.startswith("PayloadError: ")


def test_cancelling_a_pull_stream_closes_the_provider_generator(
    serve: Callable[[object], Stub],
) -> None:
    provider = Full()
    call = streaming(
        serve(provider).PullModelStream(
            pb.PullModelStreamRequest(request_json=b'{"model":"forever"}'), timeout=T
        )
    )
    for _ in range(3):
        next(call)
    call.cancel()
    assert provider.closed.wait(2.0)


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "failed to read first bidirectional message: EOF"),
        ([bidi_first(is_first=False)], "first bidirectional message must set is_first=true"),
        ([bidi_first("")], "service_name is required in first bidirectional message"),
    ],
)
def test_bidi_first_message_rules(
    serve: Callable[[object], Stub], requests: list[pb.InvokeServiceBidiRequest], message: str
) -> None:
    provider = Full()
    replies = list(serve(provider).InvokeServiceBidi(iter(requests), timeout=T))
    assert [(r.code, r.message) for r in replies] == [(11, message)]
    assert provider.calls == []


def test_bidi_passes_first_message_fields_and_forwards_its_data(
    serve: Callable[[object], Stub],
) -> None:
    provider = Full()
    requests = [bidi_first("echo", ws_conn_id="ws-1", auth_info="Bearer x", data=b"hi")]
    requests.append(text("there"))
    replies = list(serve(provider).InvokeServiceBidi(iter(requests), timeout=T))
    assert provider.calls == [("bidi", ("echo", "ws-1", "Bearer x"))]
    assert [(r.code, r.message, r.data) for r in replies] == [
        (0, "success", b"hi"),
        (0, "success", b"there"),
    ]
    assert provider.closed.is_set()


def test_bidi_error_item_keeps_the_stream_going_and_a_raise_ends_it(
    serve: Callable[[object], Stub],
) -> None:
    requests = [bidi_first("echo"), text("error-item"), text("after"), text("raise"), text("x")]
    replies = list(serve(Full()).InvokeServiceBidi(iter(requests), timeout=T))
    assert [(r.code, r.message, r.data) for r in replies] == [
        (4004, "bad item", b"d"),
        (0, "success", b"after"),
        (11, "ValueError: mid-bidi", b""),
    ]


def test_a_bidi_item_of_the_wrong_type_ends_the_stream_saying_so(
    serve: Callable[[object], Stub],
) -> None:
    # Was "AttributeError: 'str' object has no attribute 'data'".
    requests = [bidi_first("echo"), text("wrong-item"), text("x")]
    replies = list(serve(Full()).InvokeServiceBidi(iter(requests), timeout=T))
    assert [(r.code, r.message) for r in replies] == [
        (11, "TypeError: invoke_service_bidirectional yielded str, not a BidiMessage"),
    ]


def test_bidi_provider_failing_at_once_is_one_error_message(
    serve: Callable[[object], Stub],
) -> None:
    replies = list(serve(Full()).InvokeServiceBidi(iter([bidi_first("raise")]), timeout=T))
    assert [(r.code, r.message) for r in replies] == [(4006, "not bidirectional")]


def test_bidi_ends_when_the_provider_ends_even_if_the_host_keeps_sending_open(
    serve: Callable[[object], Stub],
) -> None:
    # The Go SDK waits for the host to half-close here; we end the call at once.
    provider = Full()
    sender = Sender([bidi_first("echo"), text("one"), text("", kind="close")])
    try:
        call = streaming(serve(provider).InvokeServiceBidi(iter(sender), timeout=T))
        replies = [(r.data, r.message_type) for r in call]
        assert replies == [(b"one", "text"), (b"bye", "close")]
        assert call.code() is grpc.StatusCode.OK
        assert provider.closed.is_set()
    finally:
        sender.close()


@pytest.mark.parametrize("service", ["echo", "push"])
def test_cancelling_bidi_ends_inbound_and_closes_the_generator(
    serve: Callable[[object], Stub], service: str
) -> None:
    provider = Full()
    sender = Sender([bidi_first(service), text("one")])
    try:
        call = streaming(serve(provider).InvokeServiceBidi(iter(sender), timeout=T))
        assert next(call).code == 0
        call.cancel()
        assert provider.closed.wait(2.0)
        assert rpc_error(call).code() is grpc.StatusCode.CANCELLED
    finally:
        sender.close()


def test_no_handler_thread_is_left_after_many_cancelled_bidi_calls(
    serve: Callable[[object], Stub],
) -> None:
    stub = serve(Full())  # 8 worker threads: 20 stuck handlers would starve the next call
    senders = [Sender([bidi_first("echo"), text("x")]) for _ in range(20)]
    try:
        for sender in senders:
            call = streaming(stub.InvokeServiceBidi(iter(sender), timeout=T))
            assert next(call).data == b"x"
            call.cancel()
        replies = list(stub.InvokeServiceBidi(iter([bidi_first("echo"), text("y")]), timeout=2.0))
        assert [r.data for r in replies] == [b"y"]
    finally:
        for sender in senders:
            sender.close()
