"""Items of the InvokeServiceStream and InvokeServiceBidi streams (client/interfaces.go).

Upstream these structs have no JSON tags and never travel as JSON; their JSON form here is
what Go's encoding/json would write for them: Go field names, ``Data`` as base64, a nil
(empty) ``Data``/``Metadata`` as ``null``, ``Error`` as ``null`` or the error's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aog_plugins.errors import PayloadError, PluginError
from aog_plugins.types._base import BOOL, BYTES, STR, Codec, GoStruct, go_field, map_of

__all__ = ["BidiMessage", "StreamChunk"]


def _encode_data(value: bytes) -> str | None:
    return BYTES.encode(value) if value else None  # proto gives Go a nil slice when empty


def _decode_error(value: Any, path: str) -> Exception:
    code = value.get("Code") if isinstance(value, Mapping) else None
    if isinstance(code, int) and not isinstance(code, bool):
        message = value.get("Message")
        return PluginError(code, message if isinstance(message, str) else "")
    raise PayloadError(f"{path}: only null or a plugin error object can be decoded")


def _encode_error(value: Exception | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, PluginError):  # Go's protocol.PluginError has no JSON tags
        return {"Code": value.code, "Message": value.message, "Plugin": ""}
    return {}  # Go's other error values have only unexported fields


_DATA = Codec(BYTES.decode, _encode_data, lambda v: not v, bytes)
_ERROR = Codec(_decode_error, _encode_error, lambda v: v is None, lambda: None)
_METADATA = map_of(STR, nil_if_empty=True)


@dataclass(kw_only=True)
class StreamChunk(GoStruct):
    """One InvokeServiceStream item: ``data``, Go's ``Error``, ``is_final`` and ``metadata``."""

    data: bytes = go_field("Data", _DATA)
    error: Exception | None = go_field("Error", _ERROR)
    is_final: bool = go_field("IsFinal", BOOL)
    metadata: dict[str, str] = go_field("Metadata", _METADATA)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class BidiMessage(GoStruct):
    """One InvokeServiceBidi message either way; ``message_type`` is one of the constants."""

    TEXT: ClassVar[str] = "text"
    BINARY: ClassVar[str] = "binary"
    PING: ClassVar[str] = "ping"
    PONG: ClassVar[str] = "pong"
    CLOSE: ClassVar[str] = "close"
    MESSAGE_TYPES: ClassVar[tuple[str, ...]] = ("text", "binary", "ping", "pong", "close")
    WS_CONN_ID: ClassVar[str] = "ws_conn_id"
    """Metadata key of the WebSocket connection id, sent on the first message."""

    data: bytes = go_field("Data", _DATA)
    message_type: str = go_field("MessageType", STR)
    metadata: dict[str, str] = go_field("Metadata", _METADATA)
    error: Exception | None = go_field("Error", _ERROR)
    extra: dict[str, Any] = field(default_factory=dict)
