"""``aog_provider``, host side: turn plain callables into a plugin program to launch.

Callables cannot travel to another process, so they travel by name: each must be
reachable as ``module.qualname`` (a module-level function, or a method of a module-level
class), and the child imports it again, by module name with the parent's ``sys.path``,
falling back to the module's file (pytest's ``importlib`` import mode). Lambdas, nested
functions and callables defined in ``__main__`` are refused with a
:class:`~aog_plugins.errors.ConfigurationError` that says so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aog_plugins.errors import ConfigurationError
from aog_plugins.types import PluginManifest, ProviderInfo, ServiceCapabilities, ServiceDef

__all__ = ["KINDS", "callable_spec", "default_manifest", "write_provider_program"]

KINDS = ("local", "remote")


def callable_spec(fn: Callable[..., Any], role: str) -> dict[str, str]:
    """``{"module", "qualname", "file"}`` for a callable the child can import again."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    rule = (
        "aog_provider runs the callables in another process and imports them there by name: "
        "define them at module level (not a lambda, not inside a function, not in __main__)"
    )
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise ConfigurationError(f"{role}: {fn!r} has no __module__/__qualname__; {rule}")
    if "<" in qualname or module == "__main__":
        raise ConfigurationError(f"{role}: {module}.{qualname} cannot be imported again; {rule}")
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn and getattr(found, "__func__", None) is not getattr(fn, "__func__", fn):
        raise ConfigurationError(
            f"{role}: {module}.{qualname} does not name {fn!r} (shadowed or renamed); {rule}"
        )
    file = getattr(sys.modules.get(module), "__file__", None) or ""
    return {"module": module, "qualname": qualname, "file": file}


def default_manifest(name: str, kind: str, unary: list[str], streams: list[str]) -> PluginManifest:
    """A manifest listing every service; those in ``streams`` support streaming."""
    services = [
        ServiceDef(
            service_name=service,
            task_type=service,
            protocol="HTTP",
            expose_protocol="HTTP",
            capabilities=ServiceCapabilities(support_streaming=service in streams),
        )
        for service in sorted({*unary, *streams})
    ]
    provider = ProviderInfo(
        name=name,
        display_name=name,
        version="0.0.0",
        type=kind,
        description="a provider stood up by aog_plugins.testing",
    )
    return PluginManifest(version="1.0", provider=provider, services=services)


def write_provider_program(
    directory: Path,
    *,
    services: Mapping[str, Callable[..., Any]],
    streams: Mapping[str, Callable[..., Any]],
    kind: str,
    manifest: PluginManifest | Mapping[str, Any] | None,
    name: str,
) -> Path:
    """Write ``<directory>/<name>`` (an executable Python script) and its spec file."""
    if kind not in KINDS:
        raise ConfigurationError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not name or "/" in name or name.startswith("."):
        raise ConfigurationError(f"name must be a plain file name, got {name!r}")
    for what, table in (("services", services), ("streams", streams)):
        if not isinstance(table, Mapping):
            raise ConfigurationError(
                f"{what} must be a mapping of service name to callable, e.g. "
                f"{{'chat': chat}}, got {table!r}"
            )
        for key, fn in table.items():
            if not callable(fn):
                raise ConfigurationError(f"{what}[{key!r}] is not callable: {fn!r}")
    if isinstance(manifest, PluginManifest):
        chosen = manifest
    elif manifest is not None:
        chosen = PluginManifest.from_dict(manifest)
    else:
        chosen = default_manifest(name, kind, list(services), list(streams))
    spec = {
        "kind": kind,
        "manifest": chosen.to_json().decode(),
        "services": {k: callable_spec(fn, f"services[{k!r}]") for k, fn in services.items()},
        "streams": {k: callable_spec(fn, f"streams[{k!r}]") for k, fn in streams.items()},
        "sys_path": [p for p in sys.path if p],
    }
    spec_path = directory / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    program = directory / name
    program.write_text(
        f"#!{sys.executable}\n"
        '"""An AOG provider plugin written by aog_plugins.testing (aog_provider)."""\n'
        "from aog_plugins.testing._provider_child import main\n"
        f"main({str(spec_path)!r})\n",
        encoding="utf-8",
    )
    program.chmod(0o755)
    return program
