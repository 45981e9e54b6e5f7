"""Why a plugin executable could not be started, in words a user can act on.

How the executable is found (one rule, the one ``subprocess`` and ``execvp`` use): a name
without a ``/`` is looked up on the ``PATH`` of the plugin's environment; a path with a
``/`` is taken as it is, a relative one against the host's current directory, or against
``cwd=`` when that is given.
"""

from __future__ import annotations

import errno
import os
import platform
from collections.abc import Mapping
from typing import Literal

from aog_plugins.errors import (
    HostResourceError,
    PluginNotExecutableError,
    PluginNotFoundError,
    PluginStartError,
)

__all__ = ["LOOKUP_RULE", "diagnose_exec_failure", "resolve_executable"]

LOOKUP_RULE = (
    "a name without '/' is looked up on PATH; a path with '/' is relative to the current "
    "directory (or to cwd= when given)"
)

_ELF_MACHINES = {3: "x86 (32-bit)", 40: "arm (32-bit)", 62: "amd64", 183: "arm64", 243: "riscv64"}
_HOST_MACHINE = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183}.get(
    platform.machine().lower()
)
# errno values that say the host ran short of something, not that the file is bad.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


def resolve_executable(name: str, env: Mapping[str, str], cwd: str | None) -> str | None:
    """Where ``name`` is found by the rule above; None when there is no such file."""
    if "/" in name:
        path = os.path.join(cwd, name) if cwd else name
        return os.path.abspath(path) if os.path.lexists(path) else None
    for directory in os.get_exec_path(dict(env)):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    for directory in os.get_exec_path(dict(env)):
        candidate = os.path.join(directory or ".", name)
        if os.path.lexists(candidate):
            return candidate
    return None


def diagnose_exec_failure(
    name: str,
    exc: OSError,
    command: tuple[str, ...],
    env: Mapping[str, str],
    cwd: str | None,
) -> PluginStartError:
    """The typed start error for ``exc``, raised by the OS while starting ``name``."""
    if exc.errno in _RESOURCE_ERRNOS:
        return HostResourceError(
            f"cannot start {name}: the host is out of resources ({exc.strerror})",
            diagnosis=_resource_advice(exc.errno),
            command=command,
        )
    if cwd is not None and exc.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.isdir(cwd):
        return PluginNotFoundError(
            f"cannot start {name}: the working directory cwd={cwd!r} does not exist",
            diagnosis="pass an existing directory as cwd=",
            command=command,
        )
    found = resolve_executable(name, env, cwd)
    if exc.errno == errno.ENOENT:
        if found is not None and not os.path.isdir(found):
            return PluginNotFoundError(
                f"cannot start {found}: the file exists but its interpreter (#! line) "
                "or dynamic loader was not found",
                diagnosis="missing interpreter or loader; check the first line of the script",
                command=command,
            )
        where = "on PATH" if "/" not in name else f"at {os.path.abspath(_joined(name, cwd))}"
        return PluginNotFoundError(
            f"plugin executable not found: {name!r} is not {where}",
            diagnosis=f"check the path or the plugin's platforms entry; {LOOKUP_RULE}",
            command=command,
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        path = found or name
        if os.path.isdir(path):
            return PluginNotExecutableError(
                f"cannot execute {path}: it is a directory",
                diagnosis="point to the plugin's executable file, not the directory that holds it",
                command=command,
            )
        if os.path.exists(path) and not os.access(path, os.X_OK):
            return PluginNotExecutableError(
                f"cannot execute {path}: it lacks execute permission",
                diagnosis=f"chmod +x {path}",
                command=command,
            )
        return PluginNotExecutableError(
            f"cannot execute {path}: {exc.strerror}",
            diagnosis="the OS refused to run it (a noexec mount, a security policy, or a "
            "directory on the way without search permission)",
            command=command,
        )
    if exc.errno == errno.ENOEXEC:
        why = describe_format(found or name)
        return PluginNotExecutableError(
            f"cannot execute {found or name}: {why}", diagnosis=why, command=command
        )
    return PluginNotExecutableError(
        f"cannot execute {found or name}: {exc}",
        diagnosis="the OS refused to start it; the error above says why",
        command=command,
    )


def _joined(name: str, cwd: str | None) -> str:
    return os.path.join(cwd, name) if cwd else name


def _resource_advice(code: int | None) -> str:
    if code in (errno.EMFILE, errno.ENFILE):
        return (
            "the host has too many open files (EMFILE/ENFILE): close files or sockets it "
            "no longer needs, or raise the limit (ulimit -n); the plugin itself is fine"
        )
    return (
        "the host could not create a process or pipe (out of memory or the process limit): "
        "free resources or raise the limits (ulimit -u), then retry; the plugin itself is fine"
    )


def describe_format(path: str) -> str:
    """Why the kernel refused the file's format (ENOEXEC)."""
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return "exec format error"
    if head[:4] == b"\x7fELF":
        return _describe_elf(head, size)
    if head[:2] != b"#!":
        return "not a binary and has no #! line: not an executable format this OS runs"
    return "exec format error (check the #! line)"


def _describe_elf(head: bytes, size: int) -> str:
    invalid = f"not a valid executable: a truncated or corrupt ELF file ({size} bytes)"
    # e_ident: class (1: 32-bit, 2: 64-bit), data (1: little, 2: big endian), version 1.
    if len(head) < 20 or head[4] not in (1, 2) or head[5] not in (1, 2) or head[6] != 1:
        return invalid
    header_size = 52 if head[4] == 1 else 64
    order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
    e_type = int.from_bytes(head[16:18], order)
    machine = int.from_bytes(head[18:20], order)
    if size < header_size or e_type not in (2, 3):  # ET_EXEC, ET_DYN
        return invalid
    name = _ELF_MACHINES.get(machine)
    if name is None:
        return f"{invalid}; its header names no machine type this library knows ({machine})"
    if _HOST_MACHINE is not None and machine != _HOST_MACHINE:
        return f"wrong architecture: built for {name}, this machine is {platform.machine()}"
    return f"an ELF binary for {name} that the kernel refused: corrupt or built for another OS"
