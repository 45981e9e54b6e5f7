"""PluginManifest: YAML/JSON loading from disk, Go-exact JSON, lookups, modes, timeouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aog_plugins.errors import ConfigurationError, ManifestKeyError, PayloadError
from aog_plugins.types import (
    MANIFEST_FILENAMES,
    PlatformConfig,
    PluginManifest,
    ProviderInfo,
    RecommendModelData,
    ServiceCapabilities,
    ServiceDef,
    go_arch,
    go_os,
)

# An AOG-style local engine manifest, with keys the SDK struct does not know about
# (auth_fields, extra_header, resources.ovms) and YAML scalars that are not strings.
REALISTIC_YAML = """\
version: 1.10
provider:
  name: openvino
  display_name: OpenVINO Model Server
  version: 2025.0
  type: local
  author: Intel <aog@intel.com>
  description: Local inference with OVMS & OpenVINO
  homepage: https://github.com/openvinotoolkit/model_server
  engine_host: http://127.0.0.1:16666
  released: 2025-01-31
services:
  - service_name: chat
    task_type: chat
    protocol: HTTP
    expose_protocol: HTTP
    endpoint: /v3/chat/completions
    default_model: Qwen3-8B-int4-ov
    support_models:
      - Qwen3-8B-int4-ov
      - DeepSeek-R1-Distill-Qwen-7B-int4-ov
    timeout: 120
    capabilities:
      support_streaming: yes
    auth_fields: [api_key]
    extra_header:
      X-Engine: ovms
  - service_name: speech-to-text-ws
    task_type: speech-to-text
    protocol: WEBSOCKET
    expose_protocol: WEBSOCKET
    support_models: [Paraformer-zh]
    timeout: -1
    middlewares: [auth, log]
  - service_name: embed
    task_type: embed
    protocol: HTTP
    expose_protocol: HTTP
    config_ref: openvino:embed
platforms:
  linux_amd64:
    executable: bin/linux-amd64/openvino-plugin
    dependencies: [libopenvino.so]
  windows_amd64:
    executable: bin/windows-amd64/openvino-plugin.exe
resources:
  data_dir: ${AOG_DATA_DIR}/engine/openvino
  ovms:
    port: 16666
    grpc: true
"""

REALISTIC_JSON = (
    '{"version":"1.10","provider":{"name":"openvino","display_name":"OpenVINO Model Server",'
    '"version":"2025.0","type":"local","author":"Intel \\u003caog@intel.com\\u003e",'
    '"description":"Local inference with OVMS \\u0026 OpenVINO",'
    '"homepage":"https://github.com/openvinotoolkit/model_server",'
    '"engine_host":"http://127.0.0.1:16666","released":"2025-01-31"},'
    '"services":[{"service_name":"chat","task_type":"chat","protocol":"HTTP",'
    '"expose_protocol":"HTTP","endpoint":"/v3/chat/completions",'
    '"default_model":"Qwen3-8B-int4-ov",'
    '"support_models":["Qwen3-8B-int4-ov","DeepSeek-R1-Distill-Qwen-7B-int4-ov"],'
    '"timeout":120,"capabilities":{"support_streaming":true},'
    '"auth_fields":["api_key"],"extra_header":{"X-Engine":"ovms"}},'
    '{"service_name":"speech-to-text-ws","task_type":"speech-to-text","protocol":"WEBSOCKET",'
    '"expose_protocol":"WEBSOCKET","support_models":["Paraformer-zh"],"timeout":-1,'
    '"middlewares":["auth","log"],"capabilities":{}},'
    '{"service_name":"embed","task_type":"embed","protocol":"HTTP","expose_protocol":"HTTP",'
    '"config_ref":"openvino:embed","capabilities":{}}],'
    '"platforms":{"linux_amd64":{"executable":"bin/linux-amd64/openvino-plugin",'
    '"dependencies":["libopenvino.so"]},'
    '"windows_amd64":{"executable":"bin/windows-amd64/openvino-plugin.exe"}},'
    '"resources":{"data_dir":"${AOG_DATA_DIR}/engine/openvino",'
    '"ovms":{"port":16666,"grpc":true}}}'
)


def _plugin_dir(tmp_path: Path, filename: str = "plugin.yaml", text: str = REALISTIC_YAML) -> Path:
    directory = tmp_path / "openvino"
    directory.mkdir()
    (directory / filename).write_text(text, encoding="utf-8")
    return directory


def test_json_manifest_bad_utf8_is_replaced_like_go(tmp_path: Path) -> None:
    # Go's json.Unmarshal of the file's bytes (checked with Go 1.26): one U+FFFD per bad byte.
    directory = tmp_path / "p"
    directory.mkdir()
    (directory / "plugin.json").write_bytes(b'{"version":"1\xe2\x82","services":[]}')
    assert PluginManifest.load(directory).version == "1\ufffd\ufffd"


def test_realistic_yaml_manifest(tmp_path: Path) -> None:
    manifest = PluginManifest.load(_plugin_dir(tmp_path))
    # yaml.v3 gives a string field the scalar's text: 1.10 stays "1.10", not 1.1.
    assert manifest.version == "1.10"
    assert manifest.provider.version == "2025.0"
    assert manifest.provider.extra == {"released": "2025-01-31"}
    chat = manifest.services[0]
    assert chat.capabilities.support_streaming is True  # YAML 1.1 "yes" into a bool
    assert chat.timeout == 120
    assert chat.extra == {"auth_fields": ["api_key"], "extra_header": {"X-Engine": "ovms"}}
    assert manifest.resources is not None
    assert manifest.resources.extra == {"ovms": {"port": 16666, "grpc": True}}
    assert manifest.resources.ollama is None
    # Go key order, omitempty, sorted map keys, capabilities always written, extras last.
    assert manifest.to_json() == REALISTIC_JSON.encode()


def test_json_manifest_round_trip(tmp_path: Path) -> None:
    from_json = PluginManifest.load(_plugin_dir(tmp_path, "plugin.json", REALISTIC_JSON))
    assert from_json.to_json() == REALISTIC_JSON.encode()
    assert from_json == PluginManifest.from_yaml(REALISTIC_YAML)
    assert PluginManifest.from_dict(json.loads(REALISTIC_JSON)) == from_json


def test_plugin_dir_is_recorded_and_never_serialized(tmp_path: Path) -> None:
    directory = _plugin_dir(tmp_path)
    manifest = PluginManifest.load(directory)
    assert manifest.plugin_dir == directory
    assert "plugin_dir" not in manifest.to_dict()
    assert manifest == PluginManifest.from_yaml(REALISTIC_YAML)  # not part of equality


@pytest.mark.parametrize("filename", MANIFEST_FILENAMES)
def test_load_each_filename_by_dir_and_by_file(tmp_path: Path, filename: str) -> None:
    text = REALISTIC_JSON if filename.endswith(".json") else REALISTIC_YAML
    directory = _plugin_dir(tmp_path, filename, text)
    by_dir = PluginManifest.load(directory)
    by_file = PluginManifest.load(str(directory / filename))
    assert by_dir == by_file
    assert by_dir.provider.name == "openvino"


def test_yaml_is_preferred_over_json(tmp_path: Path) -> None:
    directory = _plugin_dir(tmp_path)
    (directory / "plugin.json").write_text('{"version":"from-json"}', encoding="utf-8")
    assert PluginManifest.load(directory).version == "1.10"


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no plugin manifest"):
        PluginManifest.load(tmp_path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        PluginManifest.load(tmp_path / "plugin.yaml")


ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
)


@pytest.mark.parametrize(
    ("filename", "text", "match"),
    [
        ("plugin.yaml", "services: [\n", "invalid YAML"),
        ("plugin.yaml", "- a\n- b\n", "not a mapping"),
        ("plugin.yaml", "services:\n  - timeout: soon\n", r"services\[0\]\.timeout"),
        ("plugin.yaml", "provider: local\n", "PluginManifest.provider"),
        ("plugin.json", '{"services":[{"capabilities":{"support_streaming":"yes"}}]}', "yes|bool"),
        ("plugin.json", "{", "invalid JSON"),
        # RecursionError escaped: one such manifest failed PluginManager() as a whole.
        ("plugin.yaml", "provider: " + "[" * 5_000 + "]" * 5_000, "nested too deeply"),
        ("plugin.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("plugin.yaml", "a: &a [*a]\n", "nested too deeply"),
        # 9 levels of 9 aliases of the level before: 9**9 values to copy (minutes, GiBs).
        ("plugin.yaml", ALIAS_BOMB, "aliases expand it"),
    ],
)
def test_bad_manifest_raises_payload_error(
    tmp_path: Path, filename: str, text: str, match: str
) -> None:
    directory = _plugin_dir(tmp_path, filename, text)
    with pytest.raises(PayloadError, match=match) as info:
        PluginManifest.load(directory)
    assert str(directory / filename) in str(info.value)


def test_empty_yaml_is_the_zero_manifest() -> None:
    assert PluginManifest.from_yaml("") == PluginManifest()
    # Go's zero manifest has nil services (null); ours is an empty list, written [].
    assert PluginManifest().to_json() == (
        b'{"version":"","provider":{"name":"","display_name":"","version":"","type":""},'
        b'"services":[]}'
    )


def test_go_names_for_this_machine() -> None:
    assert go_arch("x86_64") == "amd64"
    assert go_arch("AMD64") == "amd64"  # Windows spelling
    assert go_arch("aarch64") == "arm64"
    assert go_arch("arm64") == "arm64"
    assert go_arch("i686") == "386"
    assert go_arch("riscv64") == "riscv64"
    assert go_os("linux") == "linux"
    assert go_os("darwin") == "darwin"
    assert go_os("win32") == "windows"
    assert go_os("freebsd14") == "freebsd"


def test_platform_lookup() -> None:
    manifest = PluginManifest.from_yaml(REALISTIC_YAML)
    linux = manifest.platform_for("linux", "x86_64")
    assert linux == PlatformConfig(
        executable="bin/linux-amd64/openvino-plugin", dependencies=["libopenvino.so"]
    )
    assert manifest.platform_for("win32", "AMD64").executable.endswith(".exe")
    with pytest.raises(ManifestKeyError) as info:
        manifest.platform_for("darwin", "arm64")
    assert info.value.key == "darwin_arm64"
    assert info.value.available == ("linux_amd64", "windows_amd64")
    assert isinstance(info.value, KeyError)
    assert "linux_amd64, windows_amd64" in str(info.value)


def test_platform_for_defaults_to_this_machine() -> None:
    key = f"{go_os()}_{go_arch()}"
    manifest = PluginManifest(platforms={key: PlatformConfig(executable="bin/me")})
    assert manifest.platform_for().executable == "bin/me"


def test_executable_path(tmp_path: Path) -> None:
    directory = _plugin_dir(tmp_path)
    manifest = PluginManifest.load(directory)
    expected = directory / "bin/linux-amd64/openvino-plugin"
    assert manifest.executable_path(os_name="linux", arch="x86_64") == expected
    other = tmp_path / "elsewhere"
    assert manifest.executable_path(other, os_name="linux", arch="amd64") == (
        other / "bin/linux-amd64/openvino-plugin"
    )
    with pytest.raises(ConfigurationError, match="plugin_dir"):
        PluginManifest.from_yaml(REALISTIC_YAML).executable_path(os_name="linux", arch="amd64")
    empty = PluginManifest(platforms={"linux_amd64": PlatformConfig()})
    with pytest.raises(ConfigurationError, match="no executable"):
        empty.executable_path(tmp_path, os_name="linux", arch="amd64")


def test_service_lookup() -> None:
    manifest = PluginManifest.from_yaml(REALISTIC_YAML)
    assert manifest.service("embed").config_ref == "openvino:embed"
    with pytest.raises(ManifestKeyError, match="chat, speech-to-text-ws, embed") as info:
        manifest.service("generate")
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(
    ("protocol", "expose", "streaming", "bidi", "mode"),
    [
        ("HTTP", "HTTP", False, False, "unary"),
        ("HTTP", "HTTP", True, False, "stream"),
        ("websocket", "HTTP", False, False, "stream"),  # protocol compared case-insensitively
        ("WSS", "", False, False, "stream"),
        ("HTTP", "wss", False, False, "bidi"),
        ("HTTP", "HTTP", False, True, "bidi"),
        ("WEBSOCKET", "WEBSOCKET", True, True, "bidi"),  # bidi wins
    ],
)
def test_invoke_mode(protocol: str, expose: str, streaming: bool, bidi: bool, mode: str) -> None:
    svc = ServiceDef(
        protocol=protocol,
        expose_protocol=expose,
        capabilities=ServiceCapabilities(support_streaming=streaming, support_bidirectional=bidi),
    )
    assert svc.invoke_mode == mode
    assert svc.is_bidirectional == (mode == "bidi")
    assert svc.is_streaming == (streaming or protocol.upper() in {"WEBSOCKET", "WSS"})


@pytest.mark.parametrize(
    ("timeout", "streaming", "expected"),
    [
        (0, False, 60.0),  # 0: default for unary calls
        (0, True, 300.0),  # 0: default for streams
        (-1, False, None),  # negative: no timeout
        (-5, True, None),
        (45, False, 45.0),  # seconds, as upstream's int field
        (45, True, 45.0),
    ],
)
def test_effective_timeout(timeout: int, streaming: bool, expected: float | None) -> None:
    assert ServiceDef(timeout=timeout).effective_timeout(streaming) == expected


def test_support_model_list() -> None:
    manifest = PluginManifest.from_yaml(REALISTIC_YAML)
    entries = manifest.support_model_list()
    assert [e.id for e in entries] == [
        "openvino:chat:Qwen3-8B-int4-ov",
        "openvino:chat:DeepSeek-R1-Distill-Qwen-7B-int4-ov",
        "openvino:speech-to-text-ws:Paraformer-zh",
    ]
    assert [(e.is_recommended, e.is_default) for e in entries] == [
        (True, "true"),
        (False, "false"),
        (False, "false"),
    ]
    first = entries[0]
    assert first == RecommendModelData(
        id="openvino:chat:Qwen3-8B-int4-ov",
        service_name="chat",
        method="POST",
        desc="Local inference with OVMS & OpenVINO",
        url="/v3/chat/completions",
        auth_apply_url="https://github.com/openvinotoolkit/model_server",
        name="Qwen3-8B-int4-ov",
        service_provider_name="openvino",
        is_recommended=True,
        can_select=True,
        source="local",
        is_default="true",
    )
    # As the Go client builds it: flavor and api_flavor stay empty, slices nil.
    assert first.to_json() == (
        b'{"id":"openvino:chat:Qwen3-8B-int4-ov","service_name":"chat","api_flavor":"",'
        b'"flavor":"","method":"POST","desc":"Local inference with OVMS \\u0026 OpenVINO",'
        b'"url":"/v3/chat/completions","auth_type":"",'
        b'"auth_apply_url":"https://github.com/openvinotoolkit/model_server",'
        b'"auth_fields":null,"name":"Qwen3-8B-int4-ov","service_provider_name":"openvino",'
        b'"size":"","is_recommended":true,"status":"","avatar":"","can_select":true,'
        b'"class":null,"ollama_id":"","params_size":0,"input_length":0,"output_length":0,'
        b'"source":"local","is_default":"true","think":false,"think_switch":false,'
        b'"tools":false,"context":0,"created_at":{}}'
    )


def test_support_model_list_empty_without_models() -> None:
    manifest = PluginManifest(
        provider=ProviderInfo(name="p"), services=[ServiceDef(service_name="chat")]
    )
    assert manifest.support_model_list() == []
