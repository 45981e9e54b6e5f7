"""The package's layers hold: each package imports only the packages below it, and never
another package's private (``_name``) module. Walks every import statement, including
the ones inside functions and ``TYPE_CHECKING`` blocks (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aog_plugins

PACKAGE = Path(aog_plugins.__file__).resolve().parent

# What each layer may import (besides itself). Top-level modules (the CLI, the curated
# __init__) sit on top and may import anything public. `_proto` is the generated stubs.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_proto": set(),
    "handshake": {"errors"},
    "types": {"errors"},
    "contract": {"errors", "types"},
    "transport": {"errors", "_proto", "handshake"},
    "client": {"errors", "_proto", "handshake", "types", "contract", "transport"},
    "process": {"errors", "_proto", "handshake", "types", "contract", "transport", "client"},
    "server": {"errors", "_proto", "handshake", "types", "contract", "transport"},
    "manager": {"errors", "handshake", "types", "contract", "client", "process", "transport"},
    "examples": {"errors", "types", "contract", "server"},
    # testing's aog_provider child process serves through server/ (it is a plugin).
    "testing": {
        "errors",
        "transport",
        "handshake",
        "types",
        "contract",
        "client",
        "process",
        "manager",
        "server",
    },
    "aio": {
        "errors",
        "_proto",
        "handshake",
        "types",
        "contract",
        "transport",
        "client",
        "process",
        "manager",
    },
}
# Private packages every layer may use: generated code has no public face of its own.
SHARED_PRIVATE = {"_proto"}


def _layer(module: str) -> str | None:
    """``aog_plugins.process._start`` -> ``process``; top-level modules -> None."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    first = parts[1]
    if (PACKAGE / first).is_dir():
        return first
    return "errors" if first == "errors" else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(module: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if is_package else 0)
                prefix = ".".join(base[:keep])
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from aog_plugins.process import _reaper` imports a private module too.
            found.extend(
                (node.lineno, f"{target}.{alias.name}")
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            )
    return [(line, name) for line, name in found if name.split(".")[0] == "aog_plugins"]


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts)


def _violations(module: str, source: str, is_package: bool = False) -> list[str]:
    here = _layer(module)
    bad: list[str] = []
    for line, target in _imports(module, source, is_package):
        there = _layer(target)
        where = f"{module}:{line} imports {target}"
        if there is None or there == here:
            continue
        if here is not None and there not in ALLOWED.get(here, set()):
            bad.append(f"{where}: layer {here!r} may not import {there!r}")
        parts = target.split(".")[1:]
        if any(p.startswith("_") and p not in SHARED_PRIVATE for p in parts):
            bad.append(f"{where}: private module of package {there!r}; import its public name")
    return bad


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages - set(ALLOWED) == set(), "add the new package to ALLOWED and the docs"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_the_layers(path: Path) -> None:
    assert _violations(_module_name(path), path.read_text(), path.name == "__init__.py") == []


def test_the_walk_sees_violations() -> None:
    """The checker itself: a server module that reaches into process/ is caught, both for
    the layer and for the private module, also when the import hides inside a function;
    relative imports and ``from package import _private`` count too."""
    hidden = "def f() -> None:\n    from aog_plugins.process._incarnation import Incarnation\n"
    found = _violations("aog_plugins.server._probe", hidden)
    assert any("may not import 'process'" in v for v in found), found
    assert any("private module" in v for v in found), found
    relative = "from ..client import _client\n"
    found = _violations("aog_plugins.process._probe", relative)
    assert any("aog_plugins.client._client" in v and "private" in v for v in found), found
    assert _violations("aog_plugins.process._probe", "from ._start import StartSpec\n") == []
    assert _violations("aog_plugins.cli", "from aog_plugins.process import launch\n") == []
