"""StreamChunk and BidiMessage: fields, constants and their Go-default (untagged) JSON."""

from __future__ import annotations

import pytest

from aog_plugins.errors import PayloadError, PluginError
from aog_plugins.types import BidiMessage, StreamChunk


def test_stream_chunk_golden() -> None:
    chunk = StreamChunk(
        data=b'data: {"a":1}\n\n',
        is_final=True,
        metadata={"z": "1", "content-type": "text/event-stream"},
    )
    # Untagged Go struct: field names as keys, in declaration order (Data, Error, IsFinal,
    # Metadata); []byte is base64; map keys are sorted.
    assert chunk.to_json() == (
        b'{"Data":"ZGF0YTogeyJhIjoxfQoK","Error":null,"IsFinal":true,'
        b'"Metadata":{"content-type":"text/event-stream","z":"1"}}'
    )
    assert StreamChunk.from_json(chunk.to_json()) == chunk


def test_empty_stream_chunk_is_all_nil() -> None:
    # A chunk built from a protobuf message with empty fields holds nil slices and maps.
    assert StreamChunk().to_json() == b'{"Data":null,"Error":null,"IsFinal":false,"Metadata":null}'
    assert StreamChunk.from_json(StreamChunk().to_json()) == StreamChunk()


def test_stream_chunk_errors() -> None:
    failed = StreamChunk(error=PluginError(11, "boom <x>"))
    assert failed.to_json() == (
        b'{"Data":null,"Error":{"Code":11,"Message":"boom \\u003cx\\u003e","Plugin":""},'
        b'"IsFinal":false,"Metadata":null}'
    )
    back = StreamChunk.from_json(failed.to_json())
    assert isinstance(back.error, PluginError)
    assert (back.error.code, back.error.message) == (11, "boom <x>")
    # Other Go errors have only unexported fields: {} (and cannot be decoded back).
    plain = StreamChunk(error=RuntimeError("x")).to_json()
    assert b'"Error":{}' in plain
    with pytest.raises(PayloadError, match="Error"):
        StreamChunk.from_json(plain)


def test_bidi_message_golden_and_constants() -> None:
    assert (BidiMessage.TEXT, BidiMessage.BINARY, BidiMessage.PING) == ("text", "binary", "ping")
    assert (BidiMessage.PONG, BidiMessage.CLOSE) == ("pong", "close")
    assert BidiMessage.MESSAGE_TYPES == ("text", "binary", "ping", "pong", "close")
    msg = BidiMessage(
        data=bytes([0, 1, 2, 250, 251, 252]),
        message_type=BidiMessage.BINARY,
        metadata={BidiMessage.WS_CONN_ID: "c1"},
    )
    # Declaration order of the Go struct: Data, MessageType, Metadata, Error.
    assert msg.to_json() == (
        b'{"Data":"AAEC+vv8","MessageType":"binary","Metadata":{"ws_conn_id":"c1"},"Error":null}'
    )
    assert BidiMessage.from_json(msg.to_json()) == msg


def test_bidi_decoding_accepts_any_key_case_and_rejects_bad_types() -> None:
    msg = BidiMessage.from_json(b'{"data":"aGk=","messagetype":"text","metadata":{"k":"v"}}')
    assert msg == BidiMessage(data=b"hi", message_type="text", metadata={"k": "v"})
    with pytest.raises(PayloadError, match="Data"):
        BidiMessage.from_json(b'{"Data":"not base64!"}')
    with pytest.raises(PayloadError, match="Metadata"):
        BidiMessage.from_json(b'{"Metadata":{"k":1}}')
