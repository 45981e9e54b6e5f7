"""Declarative Go-struct <-> JSON mapping shared by every AOG JSON type.

Each dataclass declares each Go field once, in Go struct order, as
``attr: T = go_field("json name", CODEC, omitempty=...)``: the ``Codec[T]`` must match the
annotation (mypy checks it) and gives the default, Go's zero value. The JSON table is
derived from ``dataclasses.fields()``. Decoding follows encoding/json: keys match exactly
or case-insensitively (Go's folding, see ``go_fold``), ``null`` leaves the default, wrong
JSON types fail; unknown keys land in ``extra``. One known difference: a key given twice
keeps only its last value, where Go decodes each into the same field (two objects for a
struct or map field merge). Go's encoder never writes a key twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar, overload

from aog_plugins.errors import PayloadError
from aog_plugins.types._gojson import (
    GO_ZERO_TIME,
    Float32,
    decode_go_bytes,
    encode_go_bytes,
    format_go_time,
    go_dumps,
    go_fold,
    go_loads,
    parse_go_time,
    round_float32,
)

_S = TypeVar("_S", bound="GoStruct")
_T = TypeVar("_T")
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


@dataclasses.dataclass(frozen=True, slots=True)
class Codec(Generic[_T]):
    """How one Go field type, held in Python as a ``_T``, decodes, encodes, counts as empty
    (``omitempty``) and zeroes."""

    decode: Callable[[Any, str], _T]
    encode: Callable[[_T], Any]
    empty: Callable[[_T], bool]
    zero: Callable[[], _T]


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


STR: Codec[str] = Codec(_dec_str, _same, _is_zero, str)
BOOL: Codec[bool] = Codec(_dec_bool, _same, _is_zero, bool)
INT: Codec[int] = Codec(_dec_int, _same, _is_zero, int)
F32: Codec[float] = Codec(_dec_f32, Float32, _is_zero, float)
# time.Time is a struct, which omitempty never drops.
TIME: Codec[datetime] = Codec(_dec_time, format_go_time, lambda v: False, lambda: GO_ZERO_TIME)
BYTES: Codec[bytes] = Codec(_dec_bytes, encode_go_bytes, _is_zero, bytes)
OPAQUE: Codec[dict[str, Any]] = Codec(_dec_opaque, _same, _is_zero, dict)


def pointer_to(codec: Codec[_T]) -> Codec[_T | None]:
    """A Go ``*T``: ``None`` is nil, written ``null`` and dropped by ``omitempty``."""

    def encode(value: _T | None) -> Any:
        return None if value is None else codec.encode(value)

    return Codec(codec.decode, encode, lambda v: v is None, lambda: None)


@overload
def list_of(item: Codec[_T], *, nil_is_none: Literal[False] = ...) -> Codec[list[_T]]: ...
@overload
def list_of(item: Codec[_T], *, nil_is_none: Literal[True]) -> Codec[list[_T] | None]: ...
def list_of(item: Codec[_T], *, nil_is_none: bool = False) -> Codec[Any]:
    """A Go slice. ``nil_is_none``: keep Go's nil (``null``) as ``None`` instead of ``[]``."""

    def decode(value: Any, path: str) -> list[_T] | None:
        if value is None:
            return None if nil_is_none else []
        if not isinstance(value, (list, tuple)):
            raise _fail(path, "array", value)
        # A null element decodes to the element's zero value, as in Go.
        return [
            item.zero() if v is None else item.decode(v, f"{path}[{i}]")
            for i, v in enumerate(value)
        ]

    def encode(value: list[_T] | None) -> list[Any] | None:
        return None if value is None else [item.encode(v) for v in value]

    return Codec(decode, encode, _is_zero, (lambda: None) if nil_is_none else list)


def map_of(item: Codec[_T], *, nil_if_empty: bool = False) -> Codec[dict[str, _T]]:
    """A Go map with string keys; Go writes its keys sorted."""

    def decode(value: Any, path: str) -> dict[str, _T]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _fail(path, "object", value)
        return {
            _key(k): item.zero() if v is None else item.decode(v, f"{path}.{_key(k)}")
            for k, v in value.items()
        }

    def encode(value: Mapping[str, _T]) -> dict[str, Any] | None:
        if not value and nil_if_empty:
            return None
        return {k: item.encode(value[k]) for k in sorted(value)}

    return Codec(decode, encode, _is_zero, dict)


@overload
def struct_of(cls: type[_S], *, pointer: Literal[False] = ...) -> Codec[_S]: ...
@overload
def struct_of(cls: type[_S], *, pointer: Literal[True]) -> Codec[_S | None]: ...
def struct_of(cls: type[_S], *, pointer: bool = False) -> Codec[Any]:
    """A nested struct (always written) or, with ``pointer``, a ``*T`` (``None``: omitted)."""

    def decode(value: Any, path: str) -> _S:
        if not isinstance(value, Mapping):
            raise _fail(path, f"{cls.__name__} (object)", value)
        return cls._decode(value, path)

    def encode(value: _S) -> dict[str, Any]:
        return value._encode()

    value: Codec[_S] = Codec(decode, encode, lambda v: False, cls)  # Go never omits a struct
    return pointer_to(value) if pointer else value


class _Tag(NamedTuple):
    """What ``go_field`` puts in a dataclass field's metadata."""

    name: str
    codec: Codec[Any]
    omitempty: bool


_TAG_KEY = "aog_plugins.go"
NOT_JSON: Mapping[str, Any] = MappingProxyType({_TAG_KEY: None})
"""Metadata for a dataclass field of a :class:`GoStruct` that is not part of its JSON."""


def go_field(name: str, codec: Codec[_T], *, omitempty: bool = False, repr: bool = True) -> _T:
    """A dataclass field that is the Go struct field ``name`` (its JSON key), defaulting to
    the codec's zero value (a fresh one per instance when it is mutable)."""
    metadata = {_TAG_KEY: _Tag(name, codec, omitempty)}
    zero = codec.zero()
    if type(zero).__hash__ is None:  # list, dict, struct: what dataclasses calls mutable
        return dataclasses.field(default_factory=codec.zero, repr=repr, metadata=metadata)
    return dataclasses.field(default=zero, repr=repr, metadata=metadata)


class Field(NamedTuple):
    """One Go struct field: Python attribute, JSON key, codec and the ``omitempty`` flag."""

    attr: str
    name: str
    codec: Codec[Any]
    omitempty: bool = False


class _Layout(NamedTuple):
    fields: tuple[Field, ...]  # in Go struct order
    exact: dict[str, Field]  # by JSON key
    folded: dict[str, Field]  # by go_fold(JSON key), as encoding/json matches keys


_LAYOUTS: dict[type[GoStruct], _Layout] = {}


def _layout(cls: type[GoStruct]) -> _Layout:
    """The JSON table of a :class:`GoStruct` dataclass, built on first use."""
    layout = _LAYOUTS.get(cls)
    if layout is None:
        layout = _LAYOUTS[cls] = _build_layout(cls)
    return layout


def _build_layout(cls: type[GoStruct]) -> _Layout:
    found: list[Field] = []
    for f in dataclasses.fields(cls):
        tag = f.metadata.get(_TAG_KEY, f)
        if isinstance(tag, _Tag):
            found.append(Field(f.name, tag.name, tag.codec, tag.omitempty))
        elif tag is f and f.name != "extra":  # no tag at all: a forgotten go_field
            raise TypeError(f"{cls.__name__}.{f.name} is neither a go_field nor NOT_JSON")
    folded: dict[str, Field] = {}
    for field in found:
        clash = folded.setdefault(go_fold(field.name), field)
        if clash is not field:
            raise TypeError(f"{cls.__name__}: {clash.attr} and {field.attr} share a JSON key")
    return _Layout(tuple(found), {f.name: f for f in found}, folded)


class GoStruct:
    """Base of the AOG JSON dataclasses: Go-exact ``to_json``/``from_json`` plus ``extra``."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # set by @dataclass
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
        return cls._decode_top(data)

    @classmethod
    def from_json(cls: type[_S], data: bytes | bytearray | memoryview | str) -> _S:
        """Parse JSON text; ``null`` gives the zero value, like Go's ``json.Unmarshal``."""
        value = go_loads(data)
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise _fail(cls.__name__, "object", value)
        return cls._decode_top(value)

    @classmethod
    def _decode_top(cls: type[_S], data: Mapping[Any, Any]) -> _S:
        try:
            return cls._decode(data, cls.__name__)
        except RecursionError:
            # Copying a deep value of an unknown key into ``extra`` recurses once or twice
            # per level: it can run out of stack where the JSON parser did not.
            raise PayloadError(f"{cls.__name__}: a value is nested too deeply") from None

    def _encode(self) -> dict[str, Any]:
        layout = _layout(type(self))
        out: dict[str, Any] = {}
        for f in layout.fields:
            value = getattr(self, f.attr)
            if f.omitempty and f.codec.empty(value):
                continue
            out[f.name] = f.codec.encode(value)
        if self.extra:
            for key, value in self.extra.items():
                if not isinstance(key, str):
                    raise PayloadError(f"{type(self).__name__}.extra key {key!r} is not a string")
                if go_fold(key) in layout.folded:  # Go would read it back as the field
                    raise PayloadError(f"{type(self).__name__}.extra key {key!r} shadows a field")
                out[key] = plain(value)  # a copy: editing to_dict() output leaves self alone
        return out

    @classmethod
    def _decode(cls: type[_S], data: Mapping[Any, Any], path: str) -> _S:
        layout = _layout(cls)
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = _key(raw_key)
            f = layout.exact.get(key) or layout.folded.get(go_fold(key))
            if f is None:
                extra[key] = plain(value)
            elif value is not None:  # Go leaves the field alone on null
                values[f.attr] = f.codec.decode(value, f"{path}.{f.name}")
        values["extra"] = extra
        return cls(**values)
