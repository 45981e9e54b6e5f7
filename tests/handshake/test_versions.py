"""Version negotiation and the host-side acceptance checks, both sides played out purely."""

from __future__ import annotations

import pytest

from aog_plugins.errors import (
    ConfigurationError,
    IncompatibleAppVersionError,
    IncompatibleCoreVersionError,
    UnsupportedProtocolError,
)
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    HandshakeConfig,
    HandshakeLine,
    check_host_acceptance,
    choose_plugin_version,
    format_protocol_versions,
    host_plugin_env,
    offered_versions,
    parse_handshake_line,
    parse_protocol_versions,
    read_plugin_env,
    select_plugin_set,
)


def _plugin_answer(environ: dict[str, str], supported: dict[int, str]) -> str:
    """Play a plugin: read the env, negotiate like go-plugin, print a handshake line."""
    env = read_plugin_env(environ, AOG_HANDSHAKE)
    assert env.cookie_ok
    version = choose_plugin_version(env.offered_versions, supported, default=min(supported))
    return HandshakeLine(1, version, "unix", "/tmp/p", "grpc", None).format()


def test_host_offers_2_and_1_to_a_v1_plugin() -> None:
    versioned = {1: "v1 set", 2: "v2 set"}
    offered = offered_versions(AOG_HANDSHAKE, versioned)
    assert offered == (2, 1)
    environ = host_plugin_env(AOG_HANDSHAKE, offered)
    assert environ["PLUGIN_PROTOCOL_VERSIONS"] == "2,1"
    line = parse_handshake_line(_plugin_answer(environ, {1: "plugin v1"}))
    assert line.app_version == 1
    check_host_acceptance(line, offered)
    assert select_plugin_set(versioned, line.app_version) == "v1 set"


def test_host_offering_only_2_rejects_a_v1_only_plugin() -> None:
    offered = offered_versions(AOG_HANDSHAKE, {2: "v2 set"})
    line = parse_handshake_line(_plugin_answer(host_plugin_env(AOG_HANDSHAKE, offered), {1: "v1"}))
    assert line.app_version == 1  # the plugin fell back to its default version
    with pytest.raises(IncompatibleAppVersionError) as info:
        check_host_acceptance(line, offered)
    message = str(info.value)
    assert "speaks version 1" in message
    assert "offered 2" in message
    assert info.value.line == "1|1|unix|/tmp/p|grpc|"


def test_plugin_picks_highest_common_version() -> None:
    environ = host_plugin_env(AOG_HANDSHAKE, (3, 2, 1))
    line = parse_handshake_line(_plugin_answer(environ, {1: "a", 2: "b", 4: "d"}))
    assert line.app_version == 2


@pytest.mark.parametrize(
    ("offered", "supported", "default", "chosen"),
    [
        ((2, 1), {1}, 1, 1),
        ((2, 1), {1, 2}, 1, 2),
        ((1, 2), {1, 2}, 1, 2),  # order of the offer does not matter: highest common wins
        ((2,), {1}, 1, 1),
        ((), {1, 2}, 1, 1),  # a legacy host sent nothing: the plugin's default
        ((5, 3), {1, 3, 5}, 1, 5),
        ((4,), {1, 2, 3}, 3, 3),
    ],
)
def test_choose_plugin_version(
    offered: tuple[int, ...], supported: set[int], default: int, chosen: int
) -> None:
    assert choose_plugin_version(offered, supported, default) == chosen


@pytest.mark.parametrize(
    ("versioned", "expected"),
    [(None, (1,)), ({}, (1,)), ({1: "a"}, (1,)), ({1: "a", 3: "c", 2: "b"}, (3, 2, 1))],
)
def test_offered_versions(versioned: dict[int, object] | None, expected: tuple[int, ...]) -> None:
    assert offered_versions(AOG_HANDSHAKE, versioned) == expected


def test_offered_versions_default_follows_config() -> None:
    assert offered_versions(HandshakeConfig(5, "K", "V")) == (5,)


@pytest.mark.parametrize("bad_key", [0, -1, True, "2", 1.0])
def test_offered_versions_rejects_bad_versions(bad_key: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        offered_versions(AOG_HANDSHAKE, {bad_key: "x"})  # type: ignore[dict-item]
    assert ">= 1" in str(info.value)


def test_format_protocol_versions() -> None:
    assert format_protocol_versions([2, 1]) == "2,1"
    assert format_protocol_versions((1,)) == "1"
    assert format_protocol_versions(iter([3, 1, 2])) == "3,1,2"


@pytest.mark.parametrize("bad", [[0], [1, -2], [True], ["1"]])
def test_format_protocol_versions_rejects_bad_values(bad: list[object]) -> None:
    with pytest.raises(ConfigurationError):
        format_protocol_versions(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "valid", "invalid"),
    [
        ("2,1", (2, 1), ()),
        ("1", (1,), ()),
        ("", (), ()),
        ("  ", (), ()),
        ("1,2", (1, 2), ()),
        (" 2 , 1 ", (2, 1), ()),
        ("2,x,1", (2, 1), ("x",)),
        ("1,1,2", (1, 2), ()),
        ("0,-3,1", (1,), ("0", "-3")),
        ("2,,1", (2, 1), ("",)),
        ("1.5,v2", (), ("1.5", "v2")),
    ],
)
def test_parse_protocol_versions(
    value: str, valid: tuple[int, ...], invalid: tuple[str, ...]
) -> None:
    assert parse_protocol_versions(value) == (valid, invalid)


def test_format_then_parse_versions() -> None:
    versions = (9, 4, 2, 1)
    assert parse_protocol_versions(format_protocol_versions(versions)) == (versions, ())


def test_select_plugin_set_missing_version_is_typed() -> None:
    with pytest.raises(IncompatibleAppVersionError) as info:
        select_plugin_set({1: "a", 3: "c"}, 2)
    assert not isinstance(info.value, KeyError)
    assert "version 2" in str(info.value)
    assert "3, 1" in str(info.value)


def test_select_plugin_set_found() -> None:
    assert select_plugin_set({1: ["set"]}, 1) == ["set"]


# --- check_host_acceptance ----------------------------------------------------------------


def test_accepts_a_grpc_line() -> None:
    check_host_acceptance(parse_handshake_line("1|1|unix|/tmp/plugin946119306|grpc|"), (1,))
    check_host_acceptance(parse_handshake_line("1|2|tcp|127.0.0.1:1234|grpc"), [3, 2])


def test_rejects_netrpc() -> None:
    with pytest.raises(UnsupportedProtocolError) as info:
        check_host_acceptance(parse_handshake_line("1|1|unix|/p"), (1,))
    message = str(info.value)
    assert "netrpc plugins cannot be hosted from Python" in message
    assert "build the plugin with GRPC" in message
    assert "'netrpc'" in message


def test_rejects_multiplexing() -> None:
    with pytest.raises(UnsupportedProtocolError) as info:
        check_host_acceptance(parse_handshake_line("1|1|unix|/p|grpc||true"), (1,))
    assert "multiplexing" in str(info.value)
    assert "PLUGIN_MULTIPLEX_GRPC" in str(info.value)
    assert info.value.line == "1|1|unix|/p|grpc||true"


def test_multiplex_false_is_accepted() -> None:
    check_host_acceptance(parse_handshake_line("1|1|unix|/p|grpc||false"), (1,))


def test_app_version_is_checked_before_protocol() -> None:
    with pytest.raises(IncompatibleAppVersionError) as info:
        check_host_acceptance(parse_handshake_line("1|3|unix|/p|netrpc|"), (2, 1))
    assert "offered 2, 1" in str(info.value)


def test_constructed_line_with_wrong_core_is_rejected() -> None:
    with pytest.raises(IncompatibleCoreVersionError):
        check_host_acceptance(HandshakeLine(2, 1, "unix", "/p", "grpc", None), (1,))
