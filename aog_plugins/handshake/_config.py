"""The handshake configuration both sides must agree on before anything is exchanged."""

from __future__ import annotations

from dataclasses import dataclass

from aog_plugins.errors import ConfigurationError

__all__ = ["AOG_HANDSHAKE", "CORE_PROTOCOL_VERSION", "HandshakeConfig"]

CORE_PROTOCOL_VERSION = 1
"""go-plugin's core protocol version: the first handshake field. Only 1 has ever existed."""


def check_env_text(what: str, value: object) -> str:
    """Return ``value`` if it can be put in a process environment, else raise ConfigurationError."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ConfigurationError(f"{what} must not be empty")
    if "\x00" in value:
        raise ConfigurationError(f"{what} must not contain a NUL character, got {value!r}")
    return value


@dataclass(frozen=True)
class HandshakeConfig:
    """What host and plugin agree on: app protocol version and the magic cookie env var.

    The cookie is a UX guard, not security: it tells a plugin it was started by a host.
    """

    protocol_version: int
    magic_cookie_key: str
    magic_cookie_value: str

    def __post_init__(self) -> None:
        version = self.protocol_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigurationError(f"protocol_version must be an integer >= 1, got {version!r}")
        check_env_text("magic_cookie_key", self.magic_cookie_key)
        check_env_text("magic_cookie_value", self.magic_cookie_value)
        if "=" in self.magic_cookie_key:
            raise ConfigurationError(
                f"magic_cookie_key is an environment variable name and must not contain '=', "
                f"got {self.magic_cookie_key!r}"
            )


AOG_HANDSHAKE = HandshakeConfig(1, "AOG_PLUGIN", "aog-provider-plugin-v1")
"""The handshake AOG's plugin-sdk uses for provider plugins."""
