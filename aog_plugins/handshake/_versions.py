"""App protocol version negotiation (go-plugin's VersionedPlugins), for host and plugin side."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from aog_plugins.errors import ConfigurationError, IncompatibleAppVersionError
from aog_plugins.handshake._config import HandshakeConfig
from aog_plugins.handshake._text import parse_go_int

__all__ = [
    "choose_plugin_version",
    "format_protocol_versions",
    "offered_versions",
    "parse_protocol_versions",
    "select_plugin_set",
]

T = TypeVar("T")


def _check_version(version: object, what: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigurationError(f"{what} must be an integer >= 1, got {version!r}")
    return version


def offered_versions(
    config: HandshakeConfig, versioned: Mapping[int, object] | None = None
) -> tuple[int, ...]:
    """The app versions a host offers in PLUGIN_PROTOCOL_VERSIONS, highest first.

    Without versioned plugin sets the host offers only ``config.protocol_version``.
    """
    if not versioned:
        return (config.protocol_version,)
    for version in versioned:
        _check_version(version, "a versioned plugin set's key (app protocol version)")
    return tuple(sorted(set(versioned), reverse=True))


def format_protocol_versions(versions: Iterable[int]) -> str:
    """The PLUGIN_PROTOCOL_VERSIONS value for ``versions``, in the given order: ``"2,1"``."""
    return ",".join(str(_check_version(v, "an app protocol version")) for v in versions)


def parse_protocol_versions(value: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Plugin side: split PLUGIN_PROTOCOL_VERSIONS into (valid versions, invalid entries).

    Tolerant like go-plugin: bad entries are skipped (the caller may warn about them);
    valid ones keep their order, without duplicates. An empty value offers nothing.
    """
    valid: list[int] = []
    invalid: list[str] = []
    if not value.strip():
        return (), ()
    for entry in value.split(","):
        number = parse_go_int(entry.strip())
        if number is None or number < 1:
            invalid.append(entry)
        elif number not in valid:
            valid.append(number)
    return tuple(valid), tuple(invalid)


def choose_plugin_version(offered: Sequence[int], supported: Collection[int], default: int) -> int:
    """Plugin side: the highest offered version the plugin supports, else ``default``.

    Falling back (go-plugin uses its lowest version) lets the host give a clear error.
    """
    common = [v for v in offered if v in supported]
    return max(common) if common else default


def select_plugin_set(versioned: Mapping[int, T], negotiated: int) -> T:
    """The plugin set for the negotiated app version; a typed error instead of KeyError."""
    try:
        return versioned[negotiated]
    except KeyError:
        available = ", ".join(str(v) for v in sorted(versioned, reverse=True)) or "none"
        raise IncompatibleAppVersionError(
            f"incompatible app protocol version: no plugin set for version {negotiated} "
            f"(available: {available}); the plugin and host must share a version"
        ) from None
