"""Declarative Go-struct <-> JSON mapping shared by every AOG JSON type.

Each dataclass lists its fields once, in Go struct order, as ``(attr, json name, codec,
omitempty)``. Decoding follows encoding/json: keys match exactly or case-insensitively,
``null`` leaves the default, wrong JSON types fail; unknown keys land in ``extra``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, ClassVar, NamedTuple, TypeVar

from aog_plugins.errors import PayloadError
from aog_plugins.types._gojson import (
    GO_ZERO_TIME,
    Float32,
    decode_go_bytes,
    encode_go_bytes,
    format_go_time,
    go_dumps,
    go_loads,
    parse_go_time,
    round_float32,
)

_S = TypeVar("_S", bound="GoStruct")
_INT64 = (-(2**63), 2**63 - 1)


@dataclasses.dataclass(frozen=True)
class YamlScalar:
    """A non-string YAML scalar with its source text: Go's yaml.v3 gives string fields the text."""

    value: Any
    raw: str


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _fail(path: str, want: str, value: Any) -> PayloadError:
    return PayloadError(f"{path}: cannot decode {_type_name(value)} into {want}")


class Codec(NamedTuple):
    """How one Go field type decodes, encodes, counts as empty (``omitempty``) and zeroes."""

    decode: Callable[[Any, str], Any]
    encode: Callable[[Any], Any]
    empty: Callable[[Any], bool]
    zero: Callable[[], Any]


def _dec_str(value: Any, path: str) -> str:
    if isinstance(value, YamlScalar):
        return value.raw
    if isinstance(value, str):
        return value
    raise _fail(path, "string", value)


def _dec_bool(value: Any, path: str) -> bool:
    if isinstance(value, YamlScalar):
        value = value.value
    if isinstance(value, bool):
        return value
    raise _fail(path, "bool", value)


def _dec_int(value: Any, path: str) -> int:
    if isinstance(value, YamlScalar):
        value = value.value
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            raise PayloadError(f"{path}: number {value} overflows int64")
        return value
    if isinstance(value, float):
        raise PayloadError(f"{path}: cannot decode number {value!r} into integer")
    raise _fail(path, "integer", value)


def _dec_f32(value: Any, path: str) -> float:
    if isinstance(value, YamlScalar):
        value = value.value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:  # the float32 Go would hold, as its shortest decimal
            return round_float32(float(value))
        except OverflowError:
            raise PayloadError(f"{path}: number {value!r} overflows float32") from None
    raise _fail(path, "float32", value)


def _dec_time(value: Any, path: str) -> datetime:
    if isinstance(value, YamlScalar):
        value = value.raw
    if not isinstance(value, str):
        raise _fail(path, "time (RFC 3339 string)", value)
    try:
        return parse_go_time(value)
    except PayloadError as exc:
        raise PayloadError(f"{path}: {exc}") from None


def _dec_bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(path, "[]byte (base64 string)", value)
    try:
        return decode_go_bytes(value)
    except PayloadError as exc:
        raise PayloadError(f"{path}: {exc}") from None


def _dec_opaque(value: Any, path: str) -> dict[str, Any]:
    # A Go struct with no exported fields: any object decodes to it and nothing is read.
    if not isinstance(value, Mapping):
        raise _fail(path, "object", value)
    return {}


def _key(key: Any) -> str:
    return key.raw if isinstance(key, YamlScalar) else str(key)


def plain(value: Any) -> Any:
    """Turn a decoded tree (maybe with YAML scalars and dates) into plain JSON values."""
    if isinstance(value, YamlScalar):
        inner = value.value
        return value.raw if isinstance(inner, (date, datetime)) else inner
    if isinstance(value, Mapping):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _is_zero(value: Any) -> bool:
    return not value


def _same(value: Any) -> Any:
    return value


STR = Codec(_dec_str, _same, _is_zero, str)
BOOL = Codec(_dec_bool, _same, _is_zero, bool)
INT = Codec(_dec_int, _same, _is_zero, int)
F32 = Codec(_dec_f32, Float32, _is_zero, float)
# time.Time is a struct, which omitempty never drops.
TIME = Codec(_dec_time, format_go_time, lambda v: False, lambda: GO_ZERO_TIME)
BYTES = Codec(_dec_bytes, encode_go_bytes, _is_zero, bytes)
OPAQUE = Codec(_dec_opaque, _same, _is_zero, dict)


def list_of(item: Codec, *, nil_is_none: bool = False) -> Codec:
    """A Go slice. ``nil_is_none``: keep Go's nil (``null``) as ``None`` instead of ``[]``."""

    def decode(value: Any, path: str) -> list[Any] | None:
        if value is None:
            return None if nil_is_none else []
        if not isinstance(value, (list, tuple)):
            raise _fail(path, "array", value)
        # A null element decodes to the element's zero value, as in Go.
        return [
            item.zero() if v is None else item.decode(v, f"{path}[{i}]")
            for i, v in enumerate(value)
        ]

    def encode(value: list[Any] | None) -> list[Any] | None:
        return None if value is None else [item.encode(v) for v in value]

    return Codec(decode, encode, _is_zero, (lambda: None) if nil_is_none else list)


def map_of(item: Codec, *, nil_if_empty: bool = False) -> Codec:
    """A Go map with string keys; Go writes its keys sorted."""

    def decode(value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _fail(path, "object", value)
        return {
            _key(k): item.zero() if v is None else item.decode(v, f"{path}.{_key(k)}")
            for k, v in value.items()
        }

    def encode(value: Mapping[str, Any]) -> dict[str, Any] | None:
        if not value and nil_if_empty:
            return None
        return {k: item.encode(value[k]) for k in sorted(value)}

    return Codec(decode, encode, _is_zero, dict)


def struct_of(cls: type[GoStruct], *, pointer: bool = False) -> Codec:
    """A nested struct (always written) or, with ``pointer``, a ``*T`` (``None``: omitted)."""

    def decode(value: Any, path: str) -> GoStruct:
        if not isinstance(value, Mapping):
            raise _fail(path, f"{cls.__name__} (object)", value)
        return cls._decode(value, path)

    def encode(value: GoStruct | None) -> dict[str, Any] | None:
        return None if value is None else value._encode()

    if pointer:
        return Codec(decode, encode, lambda v: v is None, lambda: None)
    return Codec(decode, encode, lambda v: False, cls)  # Go never omits a struct value


class Field(NamedTuple):
    """One Go struct field: Python attribute, JSON key, codec and the ``omitempty`` flag."""

    attr: str
    name: str
    codec: Codec
    omitempty: bool = False


class GoStruct:
    """Base of the AOG JSON dataclasses: Go-exact ``to_json``/``from_json`` plus ``extra``."""

    _FIELDS: ClassVar[tuple[Field, ...]] = ()
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object Go would write, as plain Python values (known keys, then ``extra``)."""
        return self._encode()

    def to_json(self) -> bytes:
        """Compact JSON bytes, identical to Go's ``json.Marshal`` of the same values."""
        return go_dumps(self._encode())

    @classmethod
    def from_dict(cls: type[_S], data: Mapping[str, Any]) -> _S:
        """Build from a decoded JSON object; raises :class:`PayloadError` on wrong types."""
        if not isinstance(data, Mapping):
            raise _fail(cls.__name__, "object", data)
        return cls._decode(data, cls.__name__)

    @classmethod
    def from_json(cls: type[_S], data: bytes | bytearray | memoryview | str) -> _S:
        """Parse JSON text; ``null`` gives the zero value, like Go's ``json.Unmarshal``."""
        value = go_loads(data)
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise _fail(cls.__name__, "object", value)
        return cls._decode(value, cls.__name__)

    def _encode(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self._FIELDS:
            value = getattr(self, f.attr)
            if f.omitempty and f.codec.empty(value):
                continue
            out[f.name] = f.codec.encode(value)
        if self.extra:
            names = {f.name.casefold() for f in self._FIELDS}
            for key, value in self.extra.items():
                if not isinstance(key, str):
                    raise PayloadError(f"{type(self).__name__}.extra key {key!r} is not a string")
                if key.casefold() in names:  # Go would read it back as the field
                    raise PayloadError(f"{type(self).__name__}.extra key {key!r} shadows a field")
                out[key] = plain(value)  # a copy: editing to_dict() output leaves self alone
        return out

    @classmethod
    def _decode(cls: type[_S], data: Mapping[Any, Any], path: str) -> _S:
        exact = {f.name: f for f in cls._FIELDS}
        folded = {f.name.casefold(): f for f in cls._FIELDS}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = _key(raw_key)
            f = exact.get(key) or folded.get(key.casefold())
            if f is None:
                extra[key] = plain(value)
            elif value is not None:  # Go leaves the field alone on null
                values[f.attr] = f.codec.decode(value, f"{path}.{f.name}")
        values["extra"] = extra
        return cls(**values)
