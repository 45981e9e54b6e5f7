"""Listen like a go-plugin server: a unix socket in the host's socket dir, or the first
free loopback TCP port of the host's range."""

from __future__ import annotations

import contextlib
import grp
import os
import secrets
import socket
import stat
import tempfile
from collections.abc import Callable

import grpc

from aog_plugins.errors import ConfigurationError

__all__ = [
    "MAX_UNIX_PATH",
    "Bind",
    "add_unix_port",
    "grpc_target",
    "listen",
    "pid_named_dir",
    "private_socket_dir",
    "resolve_group",
    "set_group_writable",
    "unix_socket_path",
]

MAX_UNIX_PATH = 107
"""sun_path holds 108 bytes on Linux, one of them the terminating NUL."""

Bind = Callable[[str, str], bool]
"""``bind(network, address)`` listens there and says whether it worked."""


def grpc_target(network: str, address: str) -> str:
    """The grpcio target for a go-plugin (network, address) pair."""
    return f"unix:{address}" if network == "unix" else address


def unix_socket_path(socket_dir: str | None) -> str:
    """A fresh socket path in ``socket_dir`` (default: the temp dir), checked for length."""
    directory = socket_dir or tempfile.gettempdir()
    path = os.path.join(directory, f"plugin{secrets.randbelow(10**9)}")
    if len(path.encode()) > MAX_UNIX_PATH:
        raise ConfigurationError(
            f"unix socket path {path!r} is longer than {MAX_UNIX_PATH} bytes; "
            "set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a shorter directory"
        )
    return path


def pid_named_dir(kind: str, directory: str | None = None) -> str:
    """A fresh 0700 directory ``aogp-<our pid>-<kind>-<random>`` in ``directory`` (default:
    the temp dir): named like a host's socket dir, so that once this process is gone
    (SIGKILL included) the next host's stale-dir sweep removes it."""
    return tempfile.mkdtemp(prefix=f"aogp-{os.getpid()}-{kind}-", dir=directory)


def private_socket_dir(kind: str, directory: str | None) -> tuple[str, str]:
    """A fresh 0700 directory for a private unix socket and that socket's path in it.

    It goes in ``directory`` (default: the temp dir), named like a host's socket dir with
    our pid (so a stale-dir sweep removes it after a SIGKILL); when the socket's path
    would not fit in sun_path there, in /tmp instead: a directory that leaves room for
    the announced socket (as go-plugin's Go plugins need) must not fail on the private
    one, which sits a level deeper under a longer name.
    """
    path = pid_named_dir(kind, directory)
    socket_path = os.path.join(path, "s")
    if len(socket_path.encode()) > MAX_UNIX_PATH and os.path.dirname(path) != "/tmp":
        os.rmdir(path)
        path = pid_named_dir(kind, "/tmp")
        socket_path = os.path.join(path, "s")
    return path, socket_path


def add_unix_port(
    server: grpc.Server, path: str, credentials: grpc.ServerCredentials | None = None
) -> bool:
    """Serve ``server`` on the unix socket ``path``; False if grpcio cannot (it raises
    RuntimeError for that, where older versions returned 0)."""
    target = grpc_target("unix", path)
    try:
        if credentials is None:
            return bool(server.add_insecure_port(target))
        return bool(server.add_secure_port(target, credentials))
    except RuntimeError:
        return False


def listen(
    network: str, bind: Bind, *, socket_dir: str | None, min_port: int, max_port: int
) -> str:
    """Bind a unix socket or the first free TCP port in ``[min_port, max_port]`` on
    127.0.0.1 and return the address that goes into the handshake line."""
    if network == "tcp":
        for port in range(min_port, max_port + 1):
            address = f"127.0.0.1:{port}"
            if _port_free(port) and bind("tcp", address):
                return address
        raise ConfigurationError(
            f"no free TCP port between {min_port} and {max_port} (PLUGIN_MIN_PORT/PLUGIN_MAX_PORT)"
        )
    path = unix_socket_path(socket_dir)
    _check_socket_dir(os.path.dirname(path))
    if not bind("unix", path):
        raise ConfigurationError(f"cannot listen on unix socket {path!r}{_bind_failure(path)}")
    return path


_DIR_FIX = "set PLUGIN_UNIX_SOCKET_DIR (or TMPDIR) to an existing directory the plugin can write to"


def _check_socket_dir(directory: str) -> None:
    """Say what is wrong with the socket dir before grpcio tries it (it would log its own
    line on stderr, and say no more than that the port could not be added)."""
    try:
        mode = os.stat(directory).st_mode
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use {directory!r} as the unix socket directory: {exc.strerror}; {_DIR_FIX}"
        ) from None
    if not stat.S_ISDIR(mode):
        raise ConfigurationError(
            f"cannot use {directory!r} as the unix socket directory: it is not a directory; "
            f"{_DIR_FIX}"
        )


def _bind_failure(path: str) -> str:
    """Why binding ``path`` fails (": reason; what to do"), learnt by binding it ourselves."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(path)
        except OSError as exc:
            return f": {exc.strerror}; {_DIR_FIX}"
    with contextlib.suppress(OSError):
        os.unlink(path)
    return ""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def set_group_writable(path: str, group: str, mode: int) -> None:
    """Give ``group`` (a name or a numeric gid) access to ``path`` with ``mode``, as
    go-plugin does for PLUGIN_UNIX_SOCKET_GROUP: the socket dir 0770, the socket 0660."""
    gid = resolve_group(group)
    try:
        os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot give group {group!r} access to {path}: {exc.strerror}; the process must "
            "own the path and be a member of the group (or root)"
        ) from exc


def resolve_group(group: str) -> int:
    """The gid of ``group`` (a name or a number); ConfigurationError when unknown."""
    text = group.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigurationError(
            f"unknown group {group!r} for the plugin's unix socket: give an existing group "
            "name or a numeric gid"
        ) from None
