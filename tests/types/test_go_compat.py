"""Byte-for-byte comparison with Go's encoding/json, using a real Go toolchain.

tests/types/go_reference.go.txt declares the upstream structs (from their field facts)
and marshals the same sample values as ``_samples()``; a second mode unmarshals inputs
and marshals them again, which checks our decoder against Go's. Skipped without ``go``
unless ``CI`` is set (then a missing toolchain fails the test).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from aog_plugins.errors import PayloadError, PluginError
from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    EngineRecommendConfig,
    EngineVersionResponse,
    GoStruct,
    ListResponse,
    ModelDetails,
    ModelInfo,
    OllamaConfig,
    PlatformConfig,
    PluginManifest,
    ProgressResponse,
    ProviderInfo,
    PullModelRequest,
    RecommendModelData,
    ResourcesConfig,
    ServiceCapabilities,
    ServiceDef,
    StreamChunk,
    UnloadModelRequest,
    parse_go_time,
)
from aog_plugins.types._gojson import format_go_float

SOURCE = Path(__file__).with_name("go_reference.go.txt")
TRICKY = 'q"b\\s/ <a>&b \x00\x01\b\f\n\r\t\x1f\x7f é 😀 \u2028\u2029 \ufffd'


def _at(text: str) -> datetime:
    return parse_go_time(text)


def _samples() -> list[GoStruct]:
    return [
        PluginManifest(),
        PluginManifest(
            version="1.0",
            provider=ProviderInfo(
                name="ollama",
                display_name="Ollama <local>",
                version="0.7.3",
                type="local",
                homepage="https://ollama.com/?a=1&b=2",
                engine_host="http://127.0.0.1:16677",
            ),
            services=[
                ServiceDef(
                    service_name="chat",
                    task_type="chat",
                    protocol="HTTP",
                    expose_protocol="HTTP",
                    endpoint="/api/chat",
                    default_model="qwen3:8b",
                    support_models=["qwen3:8b", "deepseek-r1:7b"],
                    timeout=-1,
                    capabilities=ServiceCapabilities(support_streaming=True),
                ),
                ServiceDef(
                    service_name="realtime",
                    task_type="speech-to-text",
                    protocol="WEBSOCKET",
                    expose_protocol="wss",
                    auth_type="apikey",
                    config_ref="aliyun:speech-to-text",
                    middlewares=["auth"],
                    capabilities=ServiceCapabilities(
                        support_bidirectional=True, support_streaming=True
                    ),
                ),
            ],
            platforms={
                "windows_amd64": PlatformConfig(
                    executable="bin/windows-amd64/p.exe", dependencies=["x.dll"]
                ),
                "linux_amd64": PlatformConfig(executable="bin/linux-amd64/p"),
                "darwin_arm64": PlatformConfig(executable="bin/darwin-arm64/p"),
            },
            resources=ResourcesConfig(
                data_dir="${AOG_DATA}/ollama", ollama=OllamaConfig(models_dir="models")
            ),
        ),
        ModelInfo(
            name="a",
            model="a",
            modified_at=_at("2024-06-04T10:39:38.926476538+08:00"),
            size=4661224676,
            digest="sha256:abc",
            details=ModelDetails(
                format="gguf", family="qwen2", parameter_size="7.6B", quantization_level="Q4_K_M"
            ),
        ),
        ModelInfo(modified_at=_at("2024-01-02T03:04:05Z"), details=ModelDetails(families=[])),
        ModelInfo(modified_at=_at("2024-01-02T03:04:05.120-05:30")),
        ModelInfo(),
        ListResponse(
            models=[ModelInfo(name="x", modified_at=_at("2023-12-31T23:59:59.000000001Z"))]
        ),
        ListResponse(),
        PullModelRequest(model="qwen3"),
        PullModelRequest(
            model="m",
            insecure=True,
            username="u",
            password="p&w",
            stream=False,
            name="n",
            model_type="t",
        ),
        PullModelRequest(model="m", stream=True),
        DeleteRequest(model=TRICKY),
        UnloadModelRequest(models=["a", "b"]),
        UnloadModelRequest(),
        ProgressResponse(status="pulling manifest"),
        ProgressResponse(
            status="downloading", digest="sha256:1", total=9007199254740993, completed=1
        ),
        EngineRecommendConfig(
            host="127.0.0.1:16677",
            origin="127.0.0.1",
            scheme="http",
            recommend_model="qwen3",
            download_url="https://x/y?a=1&b=2",
            download_path="/d",
            engine_path="/e",
            exec_path="/e/bin",
            exec_file="ollama",
            device_type="intel_arc",
        ),
        EngineVersionResponse(version="0.7.3"),
        RecommendModelData(
            id="p:chat:m",
            service_name="chat",
            method="POST",
            name="m",
            service_provider_name="p",
            is_recommended=True,
            can_select=True,
            source="local",
            is_default="true",
            params_size=0.1,
            context=131072,
            think=True,
            tools=True,
            input_length=8192,
        ),
        RecommendModelData(
            params_size=7.6, context=1e-7, auth_fields=["api_key"], class_=["chat", "<vision>"]
        ),
        RecommendModelData(params_size=123456789, context=3.4028235e38),
        RecommendModelData(params_size=1e21, context=9.99e-7),
        StreamChunk(
            data=b'data: {"a":1}\n\n',
            is_final=True,
            metadata={"z": "1", "content-type": "text/event-stream"},
        ),
        StreamChunk(),
        StreamChunk(error=PluginError(11, "boom <x>")),
        StreamChunk(error=RuntimeError("plain")),
        BidiMessage(
            data=bytes([0, 1, 2, 250, 251, 252]),
            message_type=BidiMessage.BINARY,
            metadata={"ws_conn_id": "c1"},
        ),
        BidiMessage(message_type=BidiMessage.PING),
    ]


_KINDS: dict[str, type[GoStruct]] = {
    "manifest": PluginManifest,
    "model": ModelInfo,
    "list": ListResponse,
    "pull": PullModelRequest,
    "progress": ProgressResponse,
    "recommend": RecommendModelData,
    "unload": UnloadModelRequest,
}

# Inputs for the decode comparison; none has unknown keys (Go drops them, we keep them).
_DECODE_CASES: list[tuple[str, str]] = [
    ("manifest", '{"Version":"x","VERSION":"y","services":[]}'),  # case-insensitive, last wins
    ("manifest", '{"version":"1","services":[{"service_name":"a","capabilities":null}]}'),
    ("manifest", '{"services":[null],"platforms":{"b":{"executable":"x"},"a":null}}'),
    ("manifest", '{"services":[],"resources":{"ollama":{}}}'),
    ("manifest", '{"services":[],"version":1}'),
    ("manifest", '{"services":[{"timeout":"30"}]}'),
    ("model", '{"modified_at":"2024-06-04T10:39:38.926476538+08:00"}'),
    ("model", '{"modified_at":"2024-01-01T00:00:00.000Z","size":12}'),
    ("model", '{"modified_at":"2024-01-01T00:00:00-00:00"}'),
    ("model", '{"modified_at":"2024-01-01T00:00:00.1234567891+01:00"}'),
    ("model", '{"modified_at":"2024-01-01 00:00:00Z"}'),
    ("model", '{"modified_at":"2024-02-30T00:00:00Z"}'),
    ("model", '{"modified_at":null,"details":null}'),
    ("model", '{"details":{"families":null}}'),
    ("model", '{"size":1.0}'),
    ("model", '{"size":"1"}'),
    ("model", '{"size":9223372036854775808}'),
    ("list", '{"models":[null,{"name":"\\u003c\\ud800\\u2028"}]}'),
    ("pull", '{"model":"m","stream":false}'),
    ("pull", '{"model":"m","stream":null,"insecure":false}'),
    ("pull", '{"insecure":"true"}'),
    ("progress", '{"status":"s","total":0,"completed":5}'),
    ("progress", '{"total":1e3}'),
    ("recommend", '{"params_size":16777217,"context":0.1,"created_at":{"x":1}}'),
    ("recommend", '{"params_size":1e39}'),
    ("recommend", '{"created_at":"2024-01-01T00:00:00Z"}'),
    ("recommend", '{"auth_fields":null,"class":[],"is_default":"true"}'),
    ("unload", '{"models":["a",null]}'),
    ("recommend", '{"thin\u212a":true}'),  # Go folds the Kelvin sign with k
    ("pull", '{"\u017ftream":true}'),  # ... and the long s with s
    ("model", '{"modified_at":"2024-01-01T00:00:00,5-00:60"}'),
    ("model", '{"modified_at":"\u0662024-01-01T00:00:00Z"}'),
]


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("go is not on PATH but CI is set: the Go comparison must run in CI")
        pytest.skip("go is not on PATH (set CI to make this a failure)")
    return go


@pytest.fixture(scope="module")
def go_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = _go()
    work = tmp_path_factory.mktemp("goref")
    (work / "main.go").write_text(SOURCE.read_text(encoding="utf-8"), encoding="utf-8")
    # Standard library only: no module download, no toolchain switch.
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off"}
    subprocess.run(
        [go, "build", "-o", str(work / "ref"), "main.go"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return work / "ref"


def _run(binary: Path, *args: str, stdin: str = "") -> list[str]:
    done = subprocess.run(
        [str(binary), *args],
        input=stdin.encode("utf-8"),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return done.stdout.decode("utf-8").splitlines()


def test_marshal_matches_go_byte_for_byte(go_reference: Path) -> None:
    expected = _run(go_reference)
    samples = _samples()
    assert len(expected) == len(samples)
    for sample, want in zip(samples, expected, strict=True):
        assert sample.to_json().decode("utf-8") == want, type(sample).__name__


def _python_roundtrip(kind: str, doc: str) -> str:
    try:
        return _KINDS[kind].from_json(doc).to_json().decode("utf-8")
    except PayloadError:
        return "ERROR"


def test_unmarshal_then_marshal_matches_go(go_reference: Path) -> None:
    stdin = "".join(f"{kind}\t{doc}\n" for kind, doc in _DECODE_CASES)
    expected = _run(go_reference, "decode", stdin=stdin)
    assert len(expected) == len(_DECODE_CASES)
    for (kind, doc), want in zip(_DECODE_CASES, expected, strict=True):
        assert _python_roundtrip(kind, doc) == want, doc


def _float_cases() -> list[float]:
    rng = random.Random(20240604)
    cases = [0.0, -0.0, 1e-6, 9.99999e-7, 1e21, 9.99999e20, 1e-7, 5e-324, 2.0**-149, 2.0**-126]
    cases += [3.4028234663852886e38, 3.4028235677973366e38, 1.7976931348623157e308, 0.1, 1 / 3]
    cases += [2.0**e for e in range(-30, 80, 7)]
    for _ in range(1500):
        bits = rng.getrandbits(64)
        value = struct.unpack("<d", struct.pack("<Q", bits))[0]
        if math.isfinite(value):
            cases.append(value)
    for _ in range(1500):  # float32 values themselves: the shortest-digits search matters here
        value = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        if math.isfinite(value):
            cases.append(value)
    cases += [rng.uniform(-1e6, 1e6) for _ in range(300)]
    return cases


def _python_floats(value: float) -> str:
    try:
        f32 = format_go_float(value, 32)
    except PayloadError:
        f32 = "ERROR"
    return f"{format_go_float(value, 64)}\t{f32}"


def test_float_formatting_matches_go(go_reference: Path) -> None:
    cases = _float_cases()
    expected = _run(go_reference, "floats", stdin="".join(f"{v!r}\n" for v in cases))
    assert len(expected) == len(cases)
    mismatches = [
        (v, want, _python_floats(v))
        for v, want in zip(cases, expected, strict=True)
        if _python_floats(v) != want
    ]
    assert mismatches == []


def test_documented_difference_null_slices(go_reference: Path) -> None:
    # Go keeps a decoded null slice nil (null); our list fields hold [] and write [].
    out = _run(go_reference, "decode", stdin='unload\t{"models":null}\n')
    assert out == ['{"models":null}']
    assert _python_roundtrip("unload", '{"models":null}') == '{"models":[]}'
