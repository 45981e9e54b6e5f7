"""Example plugins shipped inside the package, so ``aog-plugins demo`` works after any install.

``echo/`` is an AOG plugin directory (``plugin.yaml`` beside ``plugin.py``); its manifest is
read from that file by the plugin itself. As shipped it runs only where ``python3`` on PATH
has aog-plugins and ``plugin.py`` kept its execute bit (a source checkout): an installed
package has neither for sure. :func:`install_example` writes a runnable copy into a plugins
directory instead: the same files plus ``bin/<name>``, a small ``sh`` launcher that runs
``plugin.py`` with the interpreter calling it (``sys.executable``, with this copy of
aog_plugins first on ``PYTHONPATH``), named by the copy's manifest for every platform.
``python -m aog_plugins.examples --copy-to DIR`` does that from a shell.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["ECHO_DIR", "NETWORK_ENV", "echo_command", "echo_env", "install_example"]

ECHO_DIR = Path(__file__).resolve().parent / "echo"
"""The echo plugin's directory: ``plugin.yaml`` and ``plugin.py``."""

NETWORK_ENV = "AOG_EXAMPLE_NETWORK"
"""``tcp`` in the echo plugin's environment makes it listen on TCP (default: unix)."""

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def echo_command(network: Literal["unix", "tcp"] = "unix") -> list[str]:
    """The argv that runs the echo plugin with this interpreter (no execute bit needed)."""
    return [sys.executable, str(ECHO_DIR / "plugin.py"), "--network", network]


def echo_env() -> dict[str, str]:
    """Extra environment so the plugin imports this very copy of aog_plugins."""
    root = str(_PACKAGE_ROOT)
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": root if not existing else os.pathsep.join([root, existing])}


def _launcher() -> str:
    root = shlex.quote(str(_PACKAGE_ROOT))
    return (
        "#!/bin/sh\n"
        "# Written by aog_plugins.examples.install_example: runs the example plugin with the\n"
        "# Python that has aog-plugins, whatever python3 on PATH is.\n"
        f'PYTHONPATH={root}"${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        "export PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} "$(dirname "$0")/../plugin.py" "$@"\n'
    )


def install_example(
    plugins_dir: str | os.PathLike[str],
    name: str = "echo",
    *,
    dirname: str | None = None,
    version: str | None = None,
) -> Path:
    """Write a runnable copy of the echo example as ``plugins_dir/<dirname or name>``,
    its provider named ``name`` (and at ``version`` if given); returns its directory.

    An existing copy is replaced file by file the way deploy tools do (write aside, then
    rename over), so a running :class:`~aog_plugins.PluginManager` sees one replacement.
    """
    target = Path(plugins_dir) / (dirname or name)
    (target / "bin").mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = yaml.safe_load((ECHO_DIR / "plugin.yaml").read_text())
    doc["provider"]["name"] = name
    if version is not None:
        doc["provider"]["version"] = version
    for platform in doc["platforms"].values():
        platform["executable"] = f"bin/{name}"
    manifest = "# A runnable copy of aog_plugins/examples/echo (see install_example).\n"
    manifest += yaml.safe_dump(doc, sort_keys=False)
    _replace(target / "plugin.py", (ECHO_DIR / "plugin.py").read_bytes(), 0o644)
    _replace(target / "bin" / name, _launcher().encode(), 0o755)
    _replace(target / "plugin.yaml", manifest.encode(), 0o644)  # last: it names the rest
    return target


def _replace(path: Path, data: bytes, mode: int) -> None:
    aside = path.with_name(f".{path.name}.new")
    aside.write_bytes(data)
    aside.chmod(mode)
    os.replace(aside, path)
