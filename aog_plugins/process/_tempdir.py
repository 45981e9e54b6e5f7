"""Private per-plugin directories for unix sockets (mode 0700, owned by this host)."""

from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["MAX_SOCKET_DIR_LEN", "make_socket_dir", "remove_socket_dir"]

PREFIX = "aogp-"
MAX_SOCKET_DIR_LEN = 60
"""Unix socket paths are limited to ~107 bytes; plugins add a file name of their own."""


def _base_dir() -> str:
    base = tempfile.gettempdir()
    if len(base) > MAX_SOCKET_DIR_LEN - 20:
        # A long TMPDIR would make the plugin's socket path too long to bind.
        base = "/tmp"
    return base


def make_socket_dir() -> str:
    """Create a fresh 0700 directory whose name carries this host's pid."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=_base_dir())


def remove_socket_dir(path: str | None) -> None:
    """Remove a socket directory and whatever the plugin left in it."""
    if path:
        shutil.rmtree(path, ignore_errors=True)
