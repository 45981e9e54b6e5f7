"""The AOG plugin manifest (``plugin.yaml`` / ``plugin.json``) and what hosts derive from it.

Mirrors plugin-sdk/types/metadata.go: field order and ``omitempty`` as upstream, unknown
keys (``auth_fields``, ``extra_header``, ``resources.ovms`` ...) kept in ``extra``.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from aog_plugins.errors import ConfigurationError, ManifestKeyError, PayloadError
from aog_plugins.types._base import (
    BOOL,
    INT,
    NOT_JSON,
    STR,
    GoStruct,
    YamlScalar,
    go_field,
    list_of,
    map_of,
    struct_of,
)
from aog_plugins.types._models import RecommendModelData

__all__ = [
    "MANIFEST_FILENAMES",
    "OllamaConfig",
    "PlatformConfig",
    "PluginManifest",
    "ProviderInfo",
    "ResourcesConfig",
    "ServiceCapabilities",
    "ServiceDef",
    "go_arch",
    "go_os",
]

MANIFEST_FILENAMES = ("plugin.yaml", "plugin.yml", "plugin.json")
MAX_MANIFEST_BYTES = 1024 * 1024
"""A manifest larger than this is refused unread (YAML parsing of megabytes takes seconds)."""
"""Looked for in this order in a plugin directory (upstream reads .yaml, then .json)."""

DEFAULT_UNARY_TIMEOUT = 60.0
DEFAULT_STREAM_TIMEOUT = 300.0
_WEBSOCKET = ("WEBSOCKET", "WSS")

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "armv6l": "arm",
    "armv7l": "arm",
    "arm": "arm",
}


def go_os(name: str | None = None) -> str:
    """Go's GOOS for this machine (or for a ``sys.platform``-style ``name``)."""
    name = (name or sys.platform).lower()
    if name.startswith(("win", "cygwin", "msys")):
        return "windows"
    if name.startswith("linux"):
        return "linux"
    if name.startswith("darwin"):
        return "darwin"
    for bsd in ("freebsd", "openbsd", "netbsd"):
        if name.startswith(bsd):
            return bsd
    return name


def go_arch(machine: str | None = None) -> str:
    """Go's GOARCH for ``platform.machine()`` (x86_64 -> amd64, aarch64 -> arm64, i686 -> 386)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    return _ARCH.get(machine, machine)


@dataclass(kw_only=True)
class ProviderInfo(GoStruct):
    """Who provides the plugin; ``type`` is "local" (runs an engine) or "remote" (cloud API)."""

    name: str = go_field("name", STR)
    display_name: str = go_field("display_name", STR)
    version: str = go_field("version", STR)
    type: str = go_field("type", STR)
    author: str = go_field("author", STR, omitempty=True)
    description: str = go_field("description", STR, omitempty=True)
    homepage: str = go_field("homepage", STR, omitempty=True)
    engine_host: str = go_field("engine_host", STR, omitempty=True)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ServiceCapabilities(GoStruct):
    """What a service can do beyond unary calls."""

    support_streaming: bool = go_field("support_streaming", BOOL, omitempty=True)
    support_bidirectional: bool = go_field("support_bidirectional", BOOL, omitempty=True)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ServiceDef(GoStruct):
    """One service of a plugin; ``timeout`` is in seconds (0: default, negative: none)."""

    service_name: str = go_field("service_name", STR)
    task_type: str = go_field("task_type", STR)
    protocol: str = go_field("protocol", STR)
    expose_protocol: str = go_field("expose_protocol", STR)
    endpoint: str = go_field("endpoint", STR, omitempty=True)
    auth_type: str = go_field("auth_type", STR, omitempty=True)
    default_model: str = go_field("default_model", STR, omitempty=True)
    support_models: list[str] = go_field("support_models", list_of(STR), omitempty=True)
    config_ref: str = go_field("config_ref", STR, omitempty=True)
    timeout: int = go_field("timeout", INT, omitempty=True)
    middlewares: list[str] = go_field("middlewares", list_of(STR), omitempty=True)
    # omitempty never drops a struct in encoding/json: capabilities is always written.
    capabilities: ServiceCapabilities = go_field(
        "capabilities", struct_of(ServiceCapabilities), omitempty=True
    )
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_streaming(self) -> bool:
        """Server streaming: a WEBSOCKET/WSS ``protocol`` or ``support_streaming``."""
        return self.protocol.upper() in _WEBSOCKET or self.capabilities.support_streaming

    @property
    def is_bidirectional(self) -> bool:
        """Bidirectional: a WEBSOCKET/WSS ``expose_protocol`` or ``support_bidirectional``."""
        return self.expose_protocol.upper() in _WEBSOCKET or self.capabilities.support_bidirectional

    @property
    def invoke_mode(self) -> Literal["bidi", "stream", "unary"]:
        """How to call it: "bidi" wins over "stream", which wins over "unary"."""
        if self.is_bidirectional:
            return "bidi"
        return "stream" if self.is_streaming else "unary"

    def effective_timeout(self, streaming: bool) -> float | None:
        """The call timeout in seconds: 0 means 60 s unary / 300 s streaming, < 0 means none."""
        if self.timeout < 0:
            return None
        if self.timeout == 0:
            return DEFAULT_STREAM_TIMEOUT if streaming else DEFAULT_UNARY_TIMEOUT
        return float(self.timeout)


@dataclass(kw_only=True)
class PlatformConfig(GoStruct):
    """The executable (relative to the plugin directory) for one ``<goos>_<goarch>``."""

    executable: str = go_field("executable", STR)
    dependencies: list[str] = go_field("dependencies", list_of(STR), omitempty=True)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class OllamaConfig(GoStruct):
    """Ollama resource paths (Go's OllamaResources)."""

    executable: str = go_field("executable", STR, omitempty=True)
    models_dir: str = go_field("models_dir", STR, omitempty=True)
    download_dir: str = go_field("download_dir", STR, omitempty=True)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ResourcesConfig(GoStruct):
    """Plugin-managed resources; engine sections other than ``ollama`` stay in ``extra``."""

    data_dir: str = go_field("data_dir", STR, omitempty=True)
    ollama: OllamaConfig | None = go_field(
        "ollama", struct_of(OllamaConfig, pointer=True), omitempty=True
    )
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class PluginManifest(GoStruct):
    """A plugin's manifest. ``plugin_dir`` is set by :meth:`load` and never serialized."""

    version: str = go_field("version", STR)
    provider: ProviderInfo = go_field("provider", struct_of(ProviderInfo))
    services: list[ServiceDef] = go_field("services", list_of(struct_of(ServiceDef)))
    platforms: dict[str, PlatformConfig] = go_field(
        "platforms", map_of(struct_of(PlatformConfig)), omitempty=True
    )
    resources: ResourcesConfig | None = go_field(
        "resources", struct_of(ResourcesConfig, pointer=True), omitempty=True
    )
    extra: dict[str, Any] = field(default_factory=dict)
    plugin_dir: Path | None = field(default=None, compare=False, metadata=NOT_JSON)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PluginManifest:
        """Read plugin.yaml / plugin.yml / plugin.json: that file, or the one in a directory."""
        target = Path(path)
        try:
            is_dir = target.is_dir()
        except OSError as exc:  # e.g. EACCES on the directory holding it
            raise ConfigurationError(f"cannot read plugin manifest {target}: {exc}") from exc
        if is_dir:
            found = next((target / n for n in MANIFEST_FILENAMES if (target / n).is_file()), None)
            if found is None:
                names = ", ".join(MANIFEST_FILENAMES)
                raise ConfigurationError(f"no plugin manifest ({names}) in {target}")
            target = found
        try:
            with target.open("rb") as file:
                raw = file.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read plugin manifest {target}: {exc}") from exc
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ConfigurationError(
                f"plugin manifest {target} is larger than {MAX_MANIFEST_BYTES // 1024} KiB: "
                "a manifest describes a plugin in a few KiB; is this the right file?"
            )
        try:
            if target.suffix.lower() == ".json":
                manifest = cls.from_json(raw)  # bad UTF-8 is replaced as Go replaces it
            else:
                manifest = cls.from_yaml(raw.decode("utf-8", errors="replace"))
        except PayloadError as exc:
            raise PayloadError(f"{target}: {exc}") from exc
        manifest.plugin_dir = Path(os.path.abspath(target.parent))
        return manifest

    @classmethod
    def from_yaml(cls, text: str | bytes) -> PluginManifest:
        """Parse YAML the way Go's yaml.v3 fills the struct (scalars keep their text)."""
        try:
            data = yaml.load(text, Loader=_TextKeepingLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise PayloadError(f"invalid YAML: {exc}") from exc
        except RecursionError as exc:  # PyYAML's reader recurses once per nesting level
            raise PayloadError("invalid YAML: nested too deeply") from exc
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise PayloadError("PluginManifest: the YAML document is not a mapping")
        return cls.from_dict(data)

    def service(self, name: str) -> ServiceDef:
        """The service called ``name``; :class:`ManifestKeyError` lists the ones that exist."""
        for svc in self.services:
            if svc.service_name == name:
                return svc
        raise ManifestKeyError("service", name, tuple(s.service_name for s in self.services))

    def platform_for(self, os_name: str | None = None, arch: str | None = None) -> PlatformConfig:
        """The ``<goos>_<goarch>`` entry (default: this machine, in Go's names)."""
        key = f"{go_os(os_name)}_{go_arch(arch)}"
        try:
            return self.platforms[key]
        except KeyError:
            raise ManifestKeyError("platform", key, tuple(sorted(self.platforms))) from None

    def executable_path(
        self,
        plugin_dir: str | os.PathLike[str] | None = None,
        *,
        os_name: str | None = None,
        arch: str | None = None,
    ) -> Path:
        """This platform's executable, resolved against ``plugin_dir`` (default: where loaded)."""
        base = Path(plugin_dir) if plugin_dir is not None else self.plugin_dir
        if base is None:
            raise ConfigurationError("executable_path needs plugin_dir: manifest was not loaded")
        executable = self.platform_for(os_name, arch).executable
        if not executable:
            raise ConfigurationError(f"{self.provider.name}: platform entry has no executable")
        return base / executable

    def support_model_list(self) -> list[RecommendModelData]:
        """GetSupportModelList as the Go client builds it: one entry per (service, model)."""
        provider = self.provider
        return [
            RecommendModelData(
                id=f"{provider.name}:{svc.service_name}:{model}",
                service_name=svc.service_name,
                method="POST",
                desc=provider.description,
                url=svc.endpoint,
                auth_type=svc.auth_type,
                auth_apply_url=provider.homepage,
                name=model,
                service_provider_name=provider.name,
                is_recommended=model == svc.default_model,
                can_select=True,
                source=provider.type,
                is_default="true" if model == svc.default_model else "false",
            )
            for svc in self.services
            for model in svc.support_models
        ]


_MAX_YAML_NODES = 1_000_000
"""More nodes than a 1 MiB manifest can write out: only aliases get a document past it."""


class _TextKeepingLoader(yaml.SafeLoader):
    """A safe loader whose non-string scalars remember their source text (see YamlScalar)."""

    def construct_document(self, node: yaml.Node) -> Any:
        # Aliases share nodes, so a few hundred bytes (9 levels of 9 aliases of the one
        # before) stand for 9**9 values; copying them into ``extra`` would take minutes and
        # gigabytes. Go's yaml.v3 refuses "excessive aliasing" too.
        if _expanded_size(node) > _MAX_YAML_NODES:
            raise PayloadError(
                f"invalid YAML: its aliases expand it to more than {_MAX_YAML_NODES} values"
            )
        return super().construct_document(node)


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes ``root`` stands for once every alias is written out (a node that
    contains itself counts once: the decoder refuses it as nested too deeply)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if not children_done:
            if id(node) in sizes:
                continue
            sizes[id(node)] = 1  # also what a cycle back to it counts
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
        else:
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > _MAX_YAML_NODES:
                return total
            sizes[id(node)] = total
    return sizes[id(root)]


def _keep_text(tag: str) -> None:
    base = yaml.SafeLoader.yaml_constructors[tag]

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> YamlScalar:
        return YamlScalar(base(loader, node), str(node.value))

    _TextKeepingLoader.add_constructor(tag, construct)


for _tag in ("bool", "int", "float", "timestamp"):
    _keep_text(f"tag:yaml.org,2002:{_tag}")
