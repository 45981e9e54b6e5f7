"""What ``inspect`` and ``invoke`` start: a plugin executable, a plugin directory (its
manifest beside the executable, as AOG deploys a plugin), or, for ``invoke``, a plugins
directory plus a service name, routed through :class:`~aog_plugins.PluginManager` to the
one plugin that serves it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aog_plugins._cli_base import path
from aog_plugins.errors import (
    AmbiguousServiceError,
    ConfigurationError,
    ManifestKeyError,
    NoPluginForServiceError,
)
from aog_plugins.types import MANIFEST_FILENAMES, PluginManifest

if TYPE_CHECKING:
    from aog_plugins.manager import PluginEntry, PluginManager
    from aog_plugins.process import Plugin

__all__ = [
    "AmbiguousServiceError",
    "NoPluginForServiceError",
    "Target",
    "add_target_args",
    "open_target",
    "refuse_manifest_file",
    "resolve_target",
]


@dataclass(frozen=True)
class Target:
    """``kind`` is ``executable``, ``plugin-dir`` or ``plugins-dir``; ``executable`` is
    what runs (None for a plugins directory: the manager picks the plugin)."""

    kind: str
    path: Path
    executable: Path | None


def add_target_args(parser: argparse.ArgumentParser, *, plugins_dir: bool) -> None:
    what = "the plugin: its executable, or its directory (with plugin.yaml)"
    if plugins_dir:
        what += ", or a plugins directory (one folder per plugin: the service picks the plugin)"
    parser.add_argument("executable", metavar="PLUGIN", type=path, help=what)


def refuse_manifest_file(text: str, *, plugins_dir_wanted: bool) -> None:
    """A plugin's manifest file (plugin.yaml, .yml, .json) given where its directory (or,
    with ``plugins_dir_wanted``, the plugins directory above it) belongs: a usage error
    that names the directory to pass, instead of "cannot execute" or "not a directory"."""
    path = Path(text)
    # os.path.isfile: a directory we may not search is not a plugin's (no PermissionError).
    if plugins_dir_wanted and any(os.path.isfile(path / name) for name in MANIFEST_FILENAMES):
        # One plugin's directory where the plugins directory belongs: it holds no plugin
        # folders, so "list" said "no plugins" and "run" watched an empty directory.
        raise ConfigurationError(
            f"{text} is one plugin's directory (it has a manifest), not a plugins "
            f"directory: pass the directory that holds it, {Path(os.path.abspath(path)).parent}"
            f" (or 'aog-plugins inspect {text}' for this plugin alone)"
        )
    if path.name not in MANIFEST_FILENAMES or not path.is_file():
        return
    manifest = Path(os.path.abspath(path))
    if plugins_dir_wanted:
        raise ConfigurationError(
            f"{text} is a plugin's manifest, not a plugins directory: pass the directory "
            f"that holds one folder per plugin (here {manifest.parent.parent})"
        )
    raise ConfigurationError(
        f"{text} is a plugin's manifest, not the plugin: pass its directory, {manifest.parent}"
    )


def resolve_target(text: str, *, plugins_dir: bool) -> Target:
    """Tell an executable from a plugin directory and a plugins directory."""
    refuse_manifest_file(text, plugins_dir_wanted=False)
    path = Path(text)
    if not path.is_dir():
        # Path("./my-plugin") is "my-plugin", which launch() would look up on PATH: a
        # text with a "/" is a path (relative to the current directory), as the docs say.
        return Target("executable", path, Path(os.path.abspath(text)) if "/" in text else path)
    path = Path(os.path.abspath(path))  # the plugin runs in its directory
    if not any((path / name).is_file() for name in MANIFEST_FILENAMES):
        if plugins_dir:
            return Target("plugins-dir", path, None)
        raise ConfigurationError(
            f"{path} is a directory without a plugin manifest ({', '.join(MANIFEST_FILENAMES)}):"
            f" pass one plugin's directory or executable ('aog-plugins list {path}' lists a "
            "plugins directory)"
        )
    manifest = PluginManifest.load(path)
    try:
        executable = manifest.executable_path(path)
    except ManifestKeyError as exc:
        raise ConfigurationError(
            f"the plugin directory {path} has no executable for this machine: {exc}"
        ) from None
    return Target("plugin-dir", path, executable)


def open_target(
    args: argparse.Namespace, target: Target, env: Mapping[str, str] | None = None
) -> AbstractContextManager[Plugin]:
    """Start the plugin (never restarted); leaving the ``with`` block stops it."""
    from aog_plugins import RestartPolicy, launch

    wanted: str | None = getattr(args, "plugin", None)  # invoke's --plugin
    if wanted is not None and target.kind != "plugins-dir":
        raise ConfigurationError("--plugin picks a plugin of a plugins directory: pass one")
    if target.kind == "plugins-dir":
        if args.plugin_args:
            raise ConfigurationError(
                "--plugin-arg is for a plugin executable; a plugins directory's plugins run "
                "as their manifests say"
            )
        return _routed(args, target.path, env)
    assert target.executable is not None
    return launch(
        [str(target.executable), *args.plugin_args],
        auto_mtls=args.auto_mtls,
        start_timeout=args.start_timeout,
        restart=RestartPolicy.never(),
        env=env,
        cwd=str(target.path) if target.kind == "plugin-dir" else None,
    )


@contextmanager
def _routed(
    args: argparse.Namespace, directory: Path, env: Mapping[str, str] | None
) -> Iterator[Plugin]:
    from aog_plugins import PluginManager, RestartPolicy

    with PluginManager(
        directory,
        watch=False,
        auto_mtls=args.auto_mtls,
        start_timeout=args.start_timeout,
        restart=RestartPolicy.never(),
        env=env,
        replace_env=env is not None,
    ) as manager:
        name = _pick(manager, args.service, getattr(args, "plugin", None))
        yield manager.get(name)


def _pick(manager: PluginManager, service: str, wanted: str | None) -> str:
    where = manager.directory
    entries = manager.entries()
    if wanted is not None:
        entry = next((e for e in entries if e.name == wanted), None)
        if entry is None:
            names = ", ".join(e.name for e in entries) or "none"
            raise ConfigurationError(f"no plugin named {wanted!r} in {where} (plugins: {names})")
        if entry.error is not None and not entry.usable:
            raise entry.error
        if service not in entry.services:
            raise NoPluginForServiceError(
                f"plugin {wanted!r} does not serve {service!r} "
                f"(its services: {', '.join(entry.services) or 'none'})"
            )
        return wanted
    matches = manager.find(service=service)
    if len(matches) == 1:
        return matches[0].name
    if matches:
        names = ", ".join(e.name for e in matches)
        raise AmbiguousServiceError(
            f"service {service!r} is served by {len(matches)} plugins in {where} ({names}): "
            "pick one with --plugin NAME"
        )
    raise NoPluginForServiceError(f"no plugin in {where} serves {service!r}; {_offer(entries)}")


def _offer(entries: list[PluginEntry]) -> str:
    services: dict[str, list[str]] = {}
    broken = []
    for entry in entries:
        if not entry.usable:
            broken.append(entry.name)
            continue
        for service in entry.services:
            services.setdefault(service, []).append(entry.name)
    text = "services available: " + (
        ", ".join(f"{s} ({', '.join(names)})" for s, names in sorted(services.items())) or "none"
    )
    if broken:
        text += (
            f"; broken plugins not considered: {', '.join(broken)} ('aog-plugins list' says why)"
        )
    return text
