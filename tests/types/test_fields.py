"""Each Go field is declared once (``go_field``); the JSON table is derived from it.

These check the derivation itself: what is refused instead of silently dropped, the
defaults, and that every public type's table follows its dataclass fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import aog_plugins.types as public
from aog_plugins.types import GoStruct, ListResponse, PluginManifest, ServiceDef, StreamChunk
from aog_plugins.types._base import _TAG_KEY, INT, NOT_JSON, STR, go_field, list_of

GO_STRUCTS = [
    value
    for value in vars(public).values()
    if isinstance(value, type) and issubclass(value, GoStruct) and value is not GoStruct
]


def test_every_public_type_has_a_go_struct() -> None:
    assert len(GO_STRUCTS) == 20


@pytest.mark.parametrize("cls", GO_STRUCTS, ids=lambda c: c.__name__)
def test_json_keys_follow_the_dataclass_fields(cls: type[GoStruct]) -> None:
    """The zero value writes the fields omitempty keeps, in declaration order."""
    written = [
        f.metadata[_TAG_KEY]
        for f in dataclasses.fields(cls)
        if f.metadata.get(_TAG_KEY) is not None
    ]
    expected = [t.name for t in written if not (t.omitempty and t.codec.empty(t.codec.zero()))]
    assert list(cls().to_dict()) == expected
    # Every other field is the extra bag or explicitly not JSON.
    others = {f.name for f in dataclasses.fields(cls) if _TAG_KEY not in f.metadata}
    assert others == {"extra"}


def test_a_field_that_is_not_a_go_field_is_refused_not_dropped() -> None:
    @dataclasses.dataclass(kw_only=True)
    class Forgot(GoStruct):
        name: str = go_field("name", STR)
        size: int = 0  # no go_field: it would never reach the JSON
        extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Forgot\.size is neither a go_field nor NOT_JSON"):
        Forgot(size=1).to_json()
    with pytest.raises(TypeError, match=r"Forgot\.size"):
        Forgot.from_json(b'{"name": "x"}')


def test_not_json_fields_stay_out_of_the_json() -> None:
    @dataclasses.dataclass(kw_only=True)
    class Local(GoStruct):
        name: str = go_field("name", STR)
        cache: int = dataclasses.field(default=0, metadata=NOT_JSON)
        extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    assert Local(name="a", cache=7).to_json() == b'{"name":"a"}'
    assert Local.from_json(b'{"name":"a","cache":7}').extra == {"cache": 7}
    assert PluginManifest(plugin_dir=None).to_dict().keys() == {"version", "provider", "services"}


def test_two_fields_with_one_json_key_are_refused() -> None:
    @dataclasses.dataclass(kw_only=True)
    class Clash(GoStruct):
        size: int = go_field("Size", INT)
        size_again: int = go_field("size", INT)  # encoding/json matches keys case-insensitively
        extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="size and size_again share a JSON key"):
        Clash().to_json()


def test_defaults_are_go_zero_values_and_mutable_ones_are_fresh() -> None:
    @dataclasses.dataclass(kw_only=True)
    class Zeroes(GoStruct):
        text: str = go_field("text", STR)
        count: int = go_field("count", INT)
        items: list[str] = go_field("items", list_of(STR))
        maybe: list[str] | None = go_field("maybe", list_of(STR, nil_is_none=True))
        extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    first, second = Zeroes(), Zeroes()
    assert (first.text, first.count, first.items, first.maybe) == ("", 0, [], None)
    first.items.append("x")
    assert second.items == []
    assert ListResponse().models is not ListResponse().models
    assert ServiceDef().capabilities is not ServiceDef().capabilities


def test_stream_chunk_fields_are_in_go_struct_order() -> None:
    """JSON key order is the dataclass order, so the dataclass follows the Go struct."""
    assert [f.name for f in dataclasses.fields(StreamChunk)] == [
        "data",
        "error",
        "is_final",
        "metadata",
        "extra",
    ]
    assert list(StreamChunk().to_dict()) == ["Data", "Error", "IsFinal", "Metadata"]
