"""Read a plugins directory the way AOG lays it out, judging every plugin on its own.

``<plugins>/<dir>/plugin.yaml`` (or ``plugin.yml`` / ``plugin.json``) plus the executable
named by ``platforms.<goos>_<goarch>.executable``, relative to ``<dir>``. Nothing here runs
a plugin: a broken one becomes a :class:`Found` carrying its typed error.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aog_plugins.errors import (
    AogPluginsError,
    ChecksumMismatchError,
    ConfigurationError,
    DuplicatePluginError,
    ExecutableMissingError,
    ExecutableNotExecutableError,
    InvalidManifestError,
    InvalidProviderTypeError,
    ManifestKeyError,
    MissingProviderNameError,
    NoPlatformError,
    PluginChecksumError,
    PluginEntryError,
)
from aog_plugins.process import verify_checksum
from aog_plugins.types import MANIFEST_FILENAMES, PluginManifest, go_arch, go_os

__all__ = [
    "PROVIDER_TYPES",
    "Found",
    "check_checksum",
    "disk_state",
    "executable_dirs",
    "inspect_dir",
    "plugin_dirs",
    "scan",
]

PROVIDER_TYPES = ("local", "remote")

Stamp = tuple[int, int, int, int] | None
"""What says a file changed: (inode, size, mtime_ns, ctime_ns), or None when absent."""


def _stamp(path: Path | None, *, follow: bool) -> Stamp:
    if path is None:
        return None
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class Found:
    """One plugin directory as read from disk (immutable; a change makes a new one)."""

    directory: Path
    name: str
    manifest: PluginManifest | None
    manifest_path: Path | None
    executable: Path | None
    error: PluginEntryError | None
    # (manifest lstat, executable lstat, executable stat): a change means "replaced".
    fingerprint: tuple[Stamp, Stamp, Stamp]

    @property
    def nameless(self) -> bool:
        """Its manifest gave no name (unreadable, or no provider.name): ``name`` is the
        directory's, so it says nothing about which plugin the directory holds."""
        return isinstance(self.error, (InvalidManifestError, MissingProviderNameError))

    def named(self, error: PluginEntryError) -> Found:
        return Found(
            self.directory,
            self.name,
            self.manifest,
            self.manifest_path,
            self.executable,
            error,
            self.fingerprint,
        )


def manifest_file(directory: Path) -> Path | None:
    """The manifest of a plugin directory (plugin.yaml, then .yml, then .json), or None."""
    for name in MANIFEST_FILENAMES:
        candidate = directory / name
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            # The directory cannot be searched (EACCES): a plugin that cannot be read,
            # listed with the read's own error, never a failure of the whole scan.
            return candidate
    return None


def plugin_dirs(root: Path) -> list[Path]:
    """Subdirectories of ``root`` that hold a manifest, sorted by name; hidden ones skipped.
    Empty when ``root`` is gone; :class:`ConfigurationError` when it exists but cannot be
    read (no reason to take every plugin for removed)."""
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the plugins directory {root}: {exc.strerror}: "
            "let this user read and search it (chmod u+rx, or fix its owner)"
        ) from exc
    return [
        root / name for name in names if not name.startswith(".") and _holds_plugin(root / name)
    ]


def _holds_plugin(path: Path) -> bool:
    try:
        is_dir = path.is_dir()
    except OSError:
        # A symlink into a directory we may not search (EACCES): like a plugin directory
        # we may not read, listed with the read's own error, never failing the whole scan.
        return True
    return is_dir and manifest_file(path) is not None


def fingerprint_of(directory: Path, executable: Path | None) -> tuple[Stamp, Stamp, Stamp]:
    manifest = manifest_file(directory)
    return (
        _stamp(manifest, follow=False),
        _stamp(executable, follow=False),
        _stamp(executable, follow=True),
    )


def inspect_dir(directory: Path, previous: Found | None = None) -> Found:
    """Read one plugin directory; ``previous`` is reused when nothing in it changed."""
    path = manifest_file(directory)
    if (
        previous is not None
        and previous.manifest_path == path
        and fingerprint_of(directory, previous.executable) == previous.fingerprint
    ):
        return previous
    label = directory.name
    try:
        if path is None:
            raise ConfigurationError("the manifest disappeared")
        manifest = PluginManifest.load(path)
    except AogPluginsError as exc:
        return _broken(
            directory,
            label,
            path,
            None,
            InvalidManifestError(
                f"cannot use the manifest: {exc}",
                plugin=label,
                directory=str(directory),
                hint="fix the YAML/JSON so it parses as an AOG plugin manifest",
            ),
        )
    name = manifest.provider.name.strip()
    where = str(directory)
    if not name:
        return _broken(
            directory,
            label,
            path,
            manifest,
            MissingProviderNameError(
                f"{path.name} has no provider.name",
                plugin=label,
                directory=where,
                hint="set provider.name (the name hosts use for this plugin)",
            ),
        )
    kind = manifest.provider.type
    if kind not in PROVIDER_TYPES:
        return _broken(
            directory,
            name,
            path,
            manifest,
            InvalidProviderTypeError(
                f"provider.type is {kind!r}",
                plugin=name,
                directory=where,
                hint="set provider.type to 'local' (runs an engine) or 'remote' (calls an API)",
            ),
        )
    key = f"{go_os()}_{go_arch()}"

    def no_platform(message: str, hint: str) -> Found:
        error = NoPlatformError(message, plugin=name, directory=where, hint=hint)
        return _broken(directory, name, path, manifest, error)

    try:
        executable = manifest.executable_path(directory)
    except (ManifestKeyError, ConfigurationError):
        have = ", ".join(sorted(manifest.platforms)) or "none"
        return no_platform(
            f"no executable for this machine ({key}); platforms: {have}",
            f"add platforms.{key}.executable to {path.name} and build for {key}",
        )
    if "\0" in str(executable):  # os.stat() would raise ValueError, not OSError
        return no_platform(
            f"platforms.{key}.executable contains a NUL byte: no file can have that name",
            f"set platforms.{key}.executable in {path.name} to the binary's path",
        )
    error = _check_executable(executable, name, where, key)
    found = Found(
        directory, name, manifest, path, executable, error, fingerprint_of(directory, executable)
    )
    return found


def _check_executable(path: Path, name: str, where: str, key: str) -> PluginEntryError | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ExecutableMissingError(
            f"the executable {path} (platforms.{key}.executable) does not exist",
            plugin=name,
            directory=where,
            hint="build or copy the plugin's executable there",
        )
    except OSError as exc:
        return ExecutableNotExecutableError(
            f"cannot stat the executable {path}: {exc}",
            plugin=name,
            directory=where,
            hint="check the permissions of the plugin directory",
        )
    if not stat.S_ISREG(st.st_mode):
        return ExecutableNotExecutableError(
            f"the executable {path} is not a regular file",
            plugin=name,
            directory=where,
            hint="point platforms.<os>_<arch>.executable at the plugin's binary",
        )
    if not os.access(path, os.X_OK):
        return ExecutableNotExecutableError(
            f"the executable {path} is not executable (mode {stat.filemode(st.st_mode)})",
            plugin=name,
            directory=where,
            hint=f"run: chmod +x {path}",
        )
    return None


def _broken(
    directory: Path,
    name: str,
    path: Path | None,
    manifest: PluginManifest | None,
    error: PluginEntryError,
) -> Found:
    return Found(directory, name, manifest, path, None, error, fingerprint_of(directory, None))


def check_checksum(found: Found, checksum: str | None) -> PluginEntryError | None:
    """The typed error when ``found``'s executable does not match ``checksum``."""
    if checksum is None or found.executable is None:
        return None
    try:
        verify_checksum(str(found.executable), checksum)
    except ChecksumMismatchError as exc:
        return PluginChecksumError(
            exc.message,
            plugin=found.name,
            directory=str(found.directory),
            hint="install the expected build, or update the checksum you configured",
        )
    except ConfigurationError as exc:  # the configured checksum itself is malformed
        return PluginChecksumError(
            str(exc),
            plugin=found.name,
            directory=str(found.directory),
            hint="fix the checksum you configured for it",
        )
    return None


def scan(
    root: Path,
    previous: Mapping[Path, Found],
    checksums: Mapping[str, str],
) -> list[Found]:
    """Every plugin directory under ``root``, each judged alone; a duplicate name is an
    error for the newcomer (a name already known keeps its directory), else for the later
    directory in name order."""
    found: list[Found] = []
    for directory in plugin_dirs(root):
        old = previous.get(directory)
        if old is not None and isinstance(old.error, DuplicatePluginError):
            old = None  # judge it afresh: the name's owner may be gone
        item = inspect_dir(directory, old)
        if item is not old and item.error is None:
            bad = check_checksum(item, checksums.get(item.name))
            if bad is not None:
                item = item.named(bad)
        found.append(item)
    owners: dict[str, Path] = {}
    for item in found:  # a directory that already had the name keeps it
        old = previous.get(item.directory)
        if (
            old is not None
            and old.name == item.name
            and not isinstance(old.error, DuplicatePluginError)
        ):
            owners.setdefault(item.name, item.directory)
    result = []
    for candidate in found:
        item = candidate
        owner = owners.setdefault(item.name, item.directory)
        if owner != item.directory:
            item = item.named(
                DuplicatePluginError(
                    f"the name is already provided by {owner}",
                    plugin=item.name,
                    directory=str(item.directory),
                    hint="give provider.name a unique value, or remove one of the two",
                )
            )
        result.append(item)
    return result


def disk_state(root: Path, cache: Mapping[Path, Found]) -> Hashable:
    """A cheap summary of what matters under ``root`` (each plugin directory's manifest
    and executable stamps; ``cache``: the last reads, reused where nothing changed), for
    the watcher to compare; an unreadable root is its error text (a change, applied and
    reported once)."""
    try:
        dirs = plugin_dirs(root)
    except ConfigurationError as exc:
        return str(exc)
    return tuple((d, inspect_dir(d, cache.get(d)).fingerprint) for d in dirs)


def executable_dirs(found: Iterable[Found]) -> list[Path]:
    """Where the executables are, for the watcher: each directory from a plugin's folder
    down to its executable's (where a replacement lands)."""
    dirs: list[Path] = []
    for target in found:
        if target.executable is None:
            continue
        folder = Path(os.path.normpath(target.directory))
        parent = Path(os.path.normpath(target.executable.parent))
        if not parent.is_relative_to(folder):
            dirs.append(parent)  # outside its folder: that one only
            continue
        for part in parent.relative_to(folder).parts:
            folder = folder / part
            dirs.append(folder)
    return dirs
