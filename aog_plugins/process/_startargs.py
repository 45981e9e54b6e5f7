"""Turn ``launch()``'s arguments into what a start needs: argv, offered versions, the
checksum check and the plugin's environment."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Mapping, Sequence

from aog_plugins.errors import ChecksumMismatchError, ConfigurationError
from aog_plugins.handshake import HandshakeConfig

__all__ = ["MINIMAL_ENV", "command_argv", "offered_for", "plugin_env", "verify_checksum"]

_PROTOCOL_ENV_PREFIX = "PLUGIN_"
MINIMAL_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
"""What ``inherit_env=False`` keeps of the host's environment: enough to find programs and
to keep text and times right, nothing that may hold a secret."""


def command_argv(cmd: str | os.PathLike[str] | Sequence[str]) -> tuple[str, ...]:
    if isinstance(cmd, (str, os.PathLike)):
        return (os.fspath(cmd),)
    argv = tuple(os.fspath(a) for a in cmd)
    if not argv:
        raise ConfigurationError("cmd is empty: give the plugin's path or an argv list")
    return argv


def offered_for(handshake: HandshakeConfig, versions: Collection[int] | None) -> tuple[int, ...]:
    if versions is None:
        return (handshake.protocol_version,)
    offered = tuple(sorted({int(v) for v in versions}, reverse=True))
    if not offered or offered[-1] < 1:
        raise ConfigurationError(f"versions must be positive integers, got {sorted(versions)}")
    return offered


def verify_checksum(path: str, checksum: str) -> None:
    """SecureConfig: compare ``algorithm:hexdigest`` (or a bare SHA-256 hex) with the file."""
    algo, _, expected = checksum.rpartition(":")
    algo = algo or "sha256"
    try:
        digest = hashlib.new(algo)
    except ValueError as exc:
        raise ConfigurationError(f"unknown checksum algorithm {algo!r}") from exc
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ChecksumMismatchError(f"cannot read {path} to verify its checksum: {exc}") from exc
    if digest.hexdigest() != expected.lower():
        raise ChecksumMismatchError(
            f"{path} has {algo} {digest.hexdigest()}, expected {expected}: "
            "the executable is not the one configured; refusing to start it"
        )


def plugin_env(
    base: Mapping[str, str] | None, protocol_env: Mapping[str, str], *, inherit: bool = True
) -> dict[str, str]:
    """The plugin's environment: ``base`` (default: the host's own, or with ``inherit``
    False only MINIMAL_ENV of it), then the protocol variables on top."""
    if base is None:
        source = os.environ
        base = source if inherit else {k: source[k] for k in MINIMAL_ENV if k in source}
    env = dict(base)
    # A host that is itself a plugin must not pass its own protocol vars down.
    for key in list(env):
        if key.startswith(_PROTOCOL_ENV_PREFIX) and key not in protocol_env:
            del env[key]
    env.update(protocol_env)
    return env
