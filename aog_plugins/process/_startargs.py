"""Turn ``launch()``'s arguments into what a start needs: argv, offered versions, the
checksum check and the plugin's environment."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection, Mapping, Sequence

from aog_plugins.errors import ChecksumMismatchError, ConfigurationError
from aog_plugins.handshake import HandshakeConfig

__all__ = [
    "MINIMAL_ENV",
    "check_launch_types",
    "command_argv",
    "offered_for",
    "plugin_env",
    "verify_checksum",
]

_PROTOCOL_ENV_PREFIX = "PLUGIN_"
MINIMAL_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
"""What ``inherit_env=False`` keeps of the host's environment: enough to find programs and
to keep text and times right, nothing that may hold a secret."""


def command_argv(cmd: object) -> tuple[str, ...]:
    """``cmd`` (a path, or an argv list of str/PathLike) as argv; a ConfigurationError
    for anything else."""
    usage = "give the plugin's path (str or Path) or an argv list of strings"
    if isinstance(cmd, (str, os.PathLike)):
        path = os.fspath(cmd)
        if not isinstance(path, str):
            raise ConfigurationError(f"cmd must be a str path, got bytes {path!r}: {usage}")
        if not path:
            raise ConfigurationError(f"cmd is an empty path: {usage}")
        return (path,)
    if not isinstance(cmd, Sequence) or isinstance(cmd, (bytes, bytearray)):
        raise ConfigurationError(f"cmd must be a path or an argv list, got {cmd!r}: {usage}")
    argv = []
    for arg in cmd:
        item = os.fspath(arg) if isinstance(arg, os.PathLike) else arg
        if not isinstance(item, str):
            raise ConfigurationError(f"cmd has an item that is not a string: {arg!r}: {usage}")
        argv.append(item)
    if not argv or not argv[0]:
        raise ConfigurationError(f"cmd is empty: {usage}")
    return tuple(argv)


def check_launch_types(**given: object) -> None:
    """launch()'s other arguments, by name: the flags are bools, the environments
    mappings of str to str, the callbacks callables, the rest what they say (or None)."""
    for name, value in given.items():
        if value is None:
            continue
        if name in ("auto_mtls", "inherit_env", "install_signal_handlers", "multiplex"):
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False, got {value!r}")
        elif name in ("env", "extra_env"):
            if not isinstance(value, Mapping):
                raise ConfigurationError(
                    f"{name} must be a mapping of variable name to value, e.g. "
                    f"{{'LOG_LEVEL': 'debug'}}, got {value!r}"
                )
            for key, item in value.items():
                if not isinstance(key, str) or not isinstance(item, str):
                    raise ConfigurationError(f"{name} must map str to str, got {key!r}: {item!r}")
        elif name in ("on_event", "stdout", "stderr"):
            if not callable(value):
                raise ConfigurationError(f"{name} must be a callable, got {value!r}")
        elif name == "logger":
            if not isinstance(value, logging.Logger):
                raise ConfigurationError(f"logger must be a logging.Logger, got {value!r}")
        elif name == "handshake":
            if not isinstance(value, HandshakeConfig):
                raise ConfigurationError(f"handshake must be a HandshakeConfig, got {value!r}")
        elif not isinstance(value, str):  # checksum, unix_socket_group, cwd
            raise ConfigurationError(f"{name} must be a str, got {value!r}")


def offered_for(handshake: HandshakeConfig, versions: Collection[int] | None) -> tuple[int, ...]:
    if versions is None:
        return (handshake.protocol_version,)
    if isinstance(versions, (str, bytes)) or not isinstance(versions, Collection):
        raise ConfigurationError(
            f"versions must be a collection of app protocol versions, got {versions!r}"
        )
    for version in versions:
        # Go plugins read each as a 64-bit int; int() would take "2", 1.5 or True.
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**63:
            raise ConfigurationError(
                f"versions must be integers from 1 to 2**63-1, got {version!r} in {versions!r}"
            )
    if not versions:
        raise ConfigurationError("versions must offer at least one app protocol version")
    return tuple(sorted(set(versions), reverse=True))


def verify_checksum(path: str, checksum: str) -> None:
    """SecureConfig: compare ``algorithm:hexdigest`` (or a bare SHA-256 hex) with the file."""
    algo, _, expected = checksum.rpartition(":")
    algo = algo or "sha256"
    try:
        digest = hashlib.new(algo)
    except ValueError as exc:
        raise ConfigurationError(f"unknown checksum algorithm {algo!r}") from exc
    size = digest.digest_size * 2
    if len(expected) != size or not all(c in "0123456789abcdefABCDEF" for c in expected):
        raise ConfigurationError(
            f"checksum {checksum!r} is malformed: {algo} needs {size} hex digits after "
            f"'{algo}:', e.g. the output of sha256sum"
        )
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
