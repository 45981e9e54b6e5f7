"""Example plugins shipped inside the package, so ``aog-plugins demo`` works after any install.

``echo/`` is an AOG plugin directory (``plugin.yaml`` beside the executable ``plugin.py``);
its manifest is read from that file by the plugin itself, so the directory is also what a
plugin manager would load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

__all__ = ["ECHO_DIR", "echo_command", "echo_env"]

ECHO_DIR = Path(__file__).resolve().parent / "echo"
"""The echo plugin's directory: ``plugin.yaml`` and ``plugin.py``."""


def echo_command(network: Literal["unix", "tcp"] = "unix") -> list[str]:
    """The argv that runs the echo plugin with this interpreter (no execute bit needed)."""
    return [sys.executable, str(ECHO_DIR / "plugin.py"), "--network", network]


def echo_env() -> dict[str, str]:
    """Extra environment so the plugin imports this very copy of aog_plugins."""
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": root if not existing else os.pathsep.join([root, existing])}
