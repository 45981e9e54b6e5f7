"""HandshakeConfig validation and the host/plugin environment builders and readers."""

from __future__ import annotations

import dataclasses

import pytest

from aog_plugins.errors import CertificateError, ConfigurationError
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    COOKIE_REJECTED_MESSAGE,
    CORE_PROTOCOL_VERSION,
    CertificateBundle,
    HandshakeConfig,
    PluginEnv,
    host_plugin_env,
    read_plugin_env,
)


def test_aog_handshake_values() -> None:
    assert HandshakeConfig(1, "AOG_PLUGIN", "aog-provider-plugin-v1") == AOG_HANDSHAKE
    assert CORE_PROTOCOL_VERSION == 1


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AOG_HANDSHAKE.protocol_version = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((0, "K", "V"), "protocol_version"),
        ((-1, "K", "V"), "protocol_version"),
        ((True, "K", "V"), "protocol_version"),
        (("1", "K", "V"), "protocol_version"),
        ((1, "", "V"), "magic_cookie_key"),
        ((1, "K", ""), "magic_cookie_value"),
        ((1, "A=B", "V"), "'='"),
        ((1, "K\x00", "V"), "NUL"),
        ((1, "K", "V\x00"), "NUL"),
        ((1, None, "V"), "string"),
    ],
)
def test_config_validation(args: tuple[object, object, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        HandshakeConfig(*args)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_cookie_rejected_message() -> None:
    first = "This binary is a plugin. These are not meant to be executed directly."
    assert COOKIE_REJECTED_MESSAGE.startswith(first)
    assert len(COOKIE_REJECTED_MESSAGE) > len(first) + 20


def test_host_env_minimal() -> None:
    assert host_plugin_env(AOG_HANDSHAKE, (1,)) == {
        "AOG_PLUGIN": "aog-provider-plugin-v1",
        "PLUGIN_PROTOCOL_VERSIONS": "1",
        "PLUGIN_MIN_PORT": "10000",
        "PLUGIN_MAX_PORT": "25000",
    }


def test_host_env_full(bundles: dict[str, CertificateBundle]) -> None:
    pem = bundles["P-256"].cert_pem
    env = host_plugin_env(
        AOG_HANDSHAKE,
        (2, 1),
        client_cert_pem=pem,
        socket_dir="/run/aog",
        socket_group="1000",
        min_port=20000,
        max_port=20010,
    )
    assert env == {
        "AOG_PLUGIN": "aog-provider-plugin-v1",
        "PLUGIN_PROTOCOL_VERSIONS": "2,1",
        "PLUGIN_MIN_PORT": "20000",
        "PLUGIN_MAX_PORT": "20010",
        "PLUGIN_CLIENT_CERT": pem.decode(),
        "PLUGIN_UNIX_SOCKET_DIR": "/run/aog",
        "PLUGIN_UNIX_SOCKET_GROUP": "1000",
    }
    assert "PLUGIN_MULTIPLEX_GRPC" not in env


def test_env_round_trip(bundles: dict[str, CertificateBundle]) -> None:
    pem = bundles["P-384"].cert_pem
    config = HandshakeConfig(3, "MY_COOKIE", "s3cret")
    env = host_plugin_env(
        config,
        (3, 2),
        client_cert_pem=pem,
        socket_dir="/d",
        socket_group="g",
        min_port=5,
        max_port=5,
    )
    assert read_plugin_env(env, config) == PluginEnv(
        cookie_ok=True,
        offered_versions=(3, 2),
        invalid_versions=(),
        client_cert_pem=pem,
        min_port=5,
        max_port=5,
        socket_dir="/d",
        socket_group="g",
        multiplex=False,
    )
    assert read_plugin_env(env, config).auto_mtls


def test_read_empty_env_gives_defaults() -> None:
    env = read_plugin_env({}, AOG_HANDSHAKE)
    assert env == PluginEnv(cookie_ok=False)
    assert (env.min_port, env.max_port) == (10000, 25000)
    assert env.offered_versions == ()
    assert env.client_cert_pem is None
    assert not env.auto_mtls


@pytest.mark.parametrize(
    ("value", "ok"),
    [("aog-provider-plugin-v1", True), ("aog-provider-plugin-v2", False), ("", False)],
)
def test_read_cookie(value: str, ok: bool) -> None:
    assert read_plugin_env({"AOG_PLUGIN": value}, AOG_HANDSHAKE).cookie_ok is ok


def test_read_reports_invalid_versions() -> None:
    env = read_plugin_env({"PLUGIN_PROTOCOL_VERSIONS": "2,two,1"}, AOG_HANDSHAKE)
    assert env.offered_versions == (2, 1)
    assert env.invalid_versions == ("two",)


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("nope", False)])
def test_read_multiplex(value: str, expected: bool) -> None:
    env = read_plugin_env({"PLUGIN_MULTIPLEX_GRPC": value}, AOG_HANDSHAKE)
    assert env.multiplex is expected


def test_read_empty_strings_are_unset() -> None:
    environ = {
        "PLUGIN_UNIX_SOCKET_DIR": "",
        "PLUGIN_UNIX_SOCKET_GROUP": "",
        "PLUGIN_CLIENT_CERT": "",
        "PLUGIN_MIN_PORT": "",
    }
    env = read_plugin_env(environ, AOG_HANDSHAKE)
    assert (env.socket_dir, env.socket_group, env.client_cert_pem) == (None, None, None)
    assert env.min_port == 10000


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"PLUGIN_MIN_PORT": "abc"}, "'abc'"),
        ({"PLUGIN_MAX_PORT": "70000"}, "70000"),
        ({"PLUGIN_MIN_PORT": "0"}, "PLUGIN_MIN_PORT"),
        ({"PLUGIN_MIN_PORT": "3000", "PLUGIN_MAX_PORT": "2000"}, "greater than"),
        ({"PLUGIN_MAX_PORT": "1.5"}, "PLUGIN_MAX_PORT"),
    ],
)
def test_read_bad_ports(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        read_plugin_env(environ, AOG_HANDSHAKE)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("min_port", "max_port"),
    [(0, 100), (1, 65536), (500, 100), (True, 10), (-5, 10)],
)
def test_host_env_bad_ports(min_port: int, max_port: int) -> None:
    with pytest.raises(ConfigurationError):
        host_plugin_env(AOG_HANDSHAKE, (1,), min_port=min_port, max_port=max_port)


def test_host_env_needs_versions() -> None:
    with pytest.raises(ConfigurationError):
        host_plugin_env(AOG_HANDSHAKE, ())


@pytest.mark.parametrize("option", ["socket_dir", "socket_group"])
@pytest.mark.parametrize("value", ["", "a\x00b"])
def test_host_env_bad_socket_options(option: str, value: str) -> None:
    with pytest.raises(ConfigurationError):
        host_plugin_env(AOG_HANDSHAKE, (1,), **{option: value})  # type: ignore[arg-type]


def test_host_env_bad_client_cert() -> None:
    with pytest.raises(CertificateError):
        host_plugin_env(AOG_HANDSHAKE, (1,), client_cert_pem=b"not a certificate")
