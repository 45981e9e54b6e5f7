"""Model, engine and support-list payloads: goldens, round trips, unknown keys, bad types.

Each golden is derived by hand from Go's encoding/json rules on the upstream struct tags;
the comment next to it names the rule that shapes it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aog_plugins.errors import PayloadError
from aog_plugins.types import (
    DeleteRequest,
    EngineRecommendConfig,
    EngineVersionResponse,
    GoStruct,
    ListResponse,
    LoadRequest,
    ModelDetails,
    ModelInfo,
    NanoDatetime,
    ProgressResponse,
    PullModelRequest,
    RecommendModelData,
    UnloadModelRequest,
)

CST = timezone(timedelta(hours=8))

GOLDENS: list[tuple[GoStruct, bytes]] = [
    # Struct field order is key order; digest/details are omitempty and empty, so absent.
    (
        ModelInfo(name="qwen3:8b", model="qwen3:8b", modified_at=datetime(2024, 5, 1, tzinfo=CST)),
        b'{"name":"qwen3:8b","model":"qwen3:8b","modified_at":"2024-05-01T00:00:00+08:00",'
        b'"size":0}',
    ),
    # A *ModelDetails is written when set; families has no omitempty, so nil is null.
    (
        ModelInfo(
            name="a",
            modified_at=NanoDatetime(2024, 6, 4, 2, 39, 38, 926476, timezone.utc, nanosecond=538),
            size=4661224676,
            digest="sha256:1",
            details=ModelDetails(format="gguf", family="qwen2", parameter_size="7.6B"),
        ),
        b'{"name":"a","model":"","modified_at":"2024-06-04T02:39:38.926476538Z",'
        b'"size":4661224676,"digest":"sha256:1","details":{"format":"gguf","family":"qwen2",'
        b'"families":null,"parameter_size":"7.6B","quantization_level":""}}',
    ),
    # An empty (non-nil) slice is [].
    (ListResponse(), b'{"models":[]}'),
    # Go's time.Time zero value.
    (
        ListResponse(models=[ModelInfo(name="m")]),
        b'{"models":[{"name":"m","model":"","modified_at":"0001-01-01T00:00:00Z","size":0}]}',
    ),
    # Everything but model is omitempty; a nil *bool is omitted.
    (PullModelRequest(model="qwen3"), b'{"model":"qwen3"}'),
    # A non-nil *bool is written even when false; & in a string is \u0026.
    (
        PullModelRequest(model="m", insecure=True, password="p&w", stream=False, model_type="t"),
        b'{"model":"m","insecure":true,"password":"p\\u0026w","stream":false,"model_type":"t"}',
    ),
    (DeleteRequest(model="qwen3"), b'{"model":"qwen3"}'),
    (LoadRequest(model="qwen3"), b'{"model":"qwen3"}'),
    (UnloadModelRequest(models=["a", "b"]), b'{"models":["a","b"]}'),
    # status has no omitempty; digest/total/completed do.
    (ProgressResponse(), b'{"status":""}'),
    (
        ProgressResponse(status="downloading", digest="sha256:1", total=10, completed=5),
        b'{"status":"downloading","digest":"sha256:1","total":10,"completed":5}',
    ),
    # No omitempty anywhere in EngineRecommendConfig.
    (
        EngineRecommendConfig(host="127.0.0.1:16677", scheme="http"),
        b'{"host":"127.0.0.1:16677","origin":"","scheme":"http","recommend_model":"",'
        b'"download_url":"","download_path":"","engine_path":"","exec_path":"","exec_file":"",'
        b'"device_type":""}',
    ),
    (EngineVersionResponse(version="0.7.3"), b'{"version":"0.7.3"}'),
    # float32 fields print float32's shortest digits; LocalTime (no methods) is {}.
    (
        RecommendModelData(
            id="p:chat:m",
            method="POST",
            class_=["chat"],
            params_size=7.6,
            context=0.1,
            is_default="true",
        ),
        b'{"id":"p:chat:m","service_name":"","api_flavor":"","flavor":"","method":"POST",'
        b'"desc":"","url":"","auth_type":"","auth_apply_url":"","auth_fields":null,"name":"",'
        b'"service_provider_name":"","size":"","is_recommended":false,"status":"","avatar":"",'
        b'"can_select":false,"class":["chat"],"ollama_id":"","params_size":7.6,'
        b'"input_length":0,"output_length":0,"source":"","is_default":"true","think":false,'
        b'"think_switch":false,"tools":false,"context":0.1,"created_at":{}}',
    ),
]


@pytest.mark.parametrize(("value", "golden"), GOLDENS, ids=lambda v: type(v).__name__)
def test_golden_json(value: GoStruct, golden: bytes) -> None:
    assert value.to_json() == golden


@pytest.mark.parametrize(("value", "golden"), GOLDENS, ids=lambda v: type(v).__name__)
def test_round_trip(value: GoStruct, golden: bytes) -> None:
    parsed = type(value).from_json(golden)
    assert parsed == value
    assert parsed.to_json() == golden
    assert type(value).from_dict(value.to_dict()) == value
    assert type(value).from_json(golden.decode()) == value  # str input too


def test_unknown_keys_are_kept_after_known_ones() -> None:
    text = b'{"error":"pull failed <x>","status":"","extra":{"n":[1,2.5,null]},"total":3}'
    progress = ProgressResponse.from_json(text)
    assert progress.total == 3
    assert progress.extra == {"error": "pull failed <x>", "extra": {"n": [1, 2.5, None]}}
    assert progress.error == "pull failed <x>"
    assert progress.to_json() == (
        b'{"status":"","total":3,"error":"pull failed \\u003cx\\u003e","extra":{"n":[1,2.5,null]}}'
    )


def test_nested_unknown_keys_are_kept() -> None:
    text = (
        b'{"models":[{"name":"m","model":"m","modified_at":"2024-01-01T00:00:00Z","size":1,'
        b'"expires_at":"later","details":{"format":"gguf","family":"","families":null,'
        b'"parameter_size":"","quantization_level":"","parent_model":""}}],"next":2}'
    )
    listing = ListResponse.from_json(text)
    assert listing.extra == {"next": 2}
    assert listing.models[0].extra == {"expires_at": "later"}
    details = listing.models[0].details
    assert details is not None
    assert details.extra == {"parent_model": ""}
    assert ListResponse.from_json(listing.to_json()) == listing


def test_keys_match_case_insensitively_like_go() -> None:
    # encoding/json prefers an exact key but accepts any case; the last match wins.
    assert DeleteRequest.from_json(b'{"MODEL":"a"}') == DeleteRequest(model="a")
    assert DeleteRequest.from_json(b'{"model":"a","Model":"b"}').model == "b"


def test_keys_fold_like_go_not_like_casefold() -> None:
    # Checked against Go 1.26's json.Unmarshal: it folds one character to one (simple case
    # folding), so "ß" is not "ss" and "ﬆ" is not "st": these keys fill no field in Go.
    recommend = RecommendModelData.from_json('{"claß":["x"],"ﬆatus":"y"}'.encode())
    assert (recommend.class_, recommend.status) == (None, "")
    assert recommend.extra == {"claß": ["x"], "ﬆatus": "y"}
    # ... and so an extra key like these does not shadow the field: Go would not read it back.
    assert ProgressResponse(extra={"ﬆatus": "y"}).to_json() == '{"status":"","ﬆatus":"y"}'.encode()
    # Go does fold the long s with s and the Kelvin sign with k.
    assert EngineVersionResponse.from_json('{"VER\u017fION":"1"}'.encode()).version == "1"
    assert RecommendModelData.from_json('{"thin\u212a":true}'.encode()).think is True
    with pytest.raises(PayloadError, match="shadows"):
        EngineVersionResponse(extra={"ver\u017fion": "1"}).to_json()


def test_null_keeps_the_default() -> None:
    info = ModelInfo.from_json(b'{"name":null,"modified_at":null,"details":null,"size":null}')
    assert info == ModelInfo()
    assert ListResponse.from_json(b'{"models":null}') == ListResponse()  # documented: [] not None
    assert ModelDetails.from_json(b'{"families":null}').families is None
    assert ModelInfo.from_json(b"null") == ModelInfo()  # Unmarshal of null is a no-op


def test_null_list_elements_become_zero_values() -> None:
    assert UnloadModelRequest.from_json(b'{"models":["a",null]}').models == ["a", ""]
    assert ListResponse.from_json(b'{"models":[null]}').models == [ModelInfo()]


def test_pull_request_password_is_not_in_repr() -> None:
    assert "secret" not in repr(PullModelRequest(model="m", password="secret"))


def test_float32_fields_hold_float32_values() -> None:
    data = RecommendModelData.from_json(b'{"params_size":16777217,"context":0.1}')
    assert data.params_size == 16777216.0  # float32 cannot hold 16777217
    assert data.context == 0.1  # float32(0.1), kept as its shortest decimal
    assert b'"params_size":16777216' in data.to_json()
    assert b'"context":0.1,' in data.to_json()


def test_created_at_is_opaque_like_go() -> None:
    data = RecommendModelData.from_json(b'{"created_at":{"wall":1}}')
    assert data.created_at == {}
    assert data.to_json().endswith(b'"created_at":{}}')


@pytest.mark.parametrize(
    ("cls", "text", "where"),
    [
        (DeleteRequest, b'{"model":1}', "DeleteRequest.model"),
        (ModelInfo, b'{"size":"1"}', "ModelInfo.size"),
        (ModelInfo, b'{"size":1.5}', "ModelInfo.size"),
        (ModelInfo, b'{"size":1.0}', "ModelInfo.size"),  # Go: no float into int64
        (ModelInfo, b'{"size":true}', "ModelInfo.size"),
        (ModelInfo, b'{"size":9223372036854775808}', "ModelInfo.size"),
        (ModelInfo, b'{"modified_at":"yesterday"}', "ModelInfo.modified_at"),
        (ModelInfo, b'{"modified_at":1700000000}', "ModelInfo.modified_at"),
        (ModelInfo, b'{"details":[]}', "ModelInfo.details"),
        (ModelInfo, b'{"details":{"families":"x"}}', "ModelInfo.details.families"),
        (ModelInfo, b'{"details":{"families":[1]}}', "ModelInfo.details.families[0]"),
        (ListResponse, b'{"models":{}}', "ListResponse.models"),
        (ListResponse, b'{"models":[1]}', "ListResponse.models[0]"),
        (PullModelRequest, b'{"stream":"yes"}', "PullModelRequest.stream"),
        (PullModelRequest, b'{"insecure":1}', "PullModelRequest.insecure"),
        (RecommendModelData, b'{"params_size":"7B"}', "RecommendModelData.params_size"),
        (RecommendModelData, b'{"params_size":1e39}', "RecommendModelData.params_size"),
        (RecommendModelData, b'{"created_at":"2024"}', "RecommendModelData.created_at"),
        (ProgressResponse, b"[]", "ProgressResponse"),
        (ProgressResponse, b'"status"', "ProgressResponse"),
        (ProgressResponse, b"{", "invalid JSON"),
    ],
)
def test_wrong_types_raise_payload_error(cls: type[GoStruct], text: bytes, where: str) -> None:
    with pytest.raises(PayloadError, match="^" + re.escape(where)):
        cls.from_json(text)


def test_payload_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="model"):
        DeleteRequest.from_json(b'{"model":1}')


def test_from_dict_rejects_non_mappings() -> None:
    with pytest.raises(PayloadError):
        DeleteRequest.from_dict(["model"])  # type: ignore[arg-type]


def test_extra_may_not_shadow_a_field() -> None:
    with pytest.raises(PayloadError, match="shadows"):
        DeleteRequest(model="a", extra={"Model": "b"}).to_json()


def test_unencodable_extra_raises_payload_error() -> None:
    bad: dict[str, Any] = {"x": {1, 2}}
    with pytest.raises(PayloadError):
        DeleteRequest(extra=bad).to_json()
    bad_key: dict[Any, Any] = {1: "x"}
    with pytest.raises(PayloadError, match="not a string"):
        DeleteRequest(extra=bad_key).to_json()


def test_to_dict_copies_extra() -> None:
    request = DeleteRequest(model="m", extra={"tags": ["a"]})
    request.to_dict()["tags"].append("b")
    assert request.extra == {"tags": ["a"]}


def test_to_dict_is_plain_json() -> None:
    info = ModelInfo(name="m", modified_at=datetime(2024, 1, 1, tzinfo=timezone.utc))
    assert info.to_dict() == {
        "name": "m",
        "model": "",
        "modified_at": "2024-01-01T00:00:00Z",
        "size": 0,
    }
