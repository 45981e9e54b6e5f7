"""Model, engine and support-list payloads of the AOG ProviderService (plugin-sdk/types).

Field order, JSON names and ``omitempty`` follow the upstream Go struct tags. Slices whose
Go value is often nil keep ``None`` (written ``null``); the others default to ``[]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aog_plugins.types._base import (
    BOOL,
    F32,
    INT,
    OPAQUE,
    STR,
    TIME,
    GoStruct,
    go_field,
    list_of,
    pointer_to,
    struct_of,
)

__all__ = [
    "DeleteRequest",
    "EngineRecommendConfig",
    "EngineVersionResponse",
    "ListResponse",
    "LoadRequest",
    "ModelDetails",
    "ModelInfo",
    "ProgressResponse",
    "PullModelRequest",
    "RecommendModelData",
    "UnloadModelRequest",
]


@dataclass(kw_only=True)
class ModelDetails(GoStruct):
    """Format and family details of a model (Ollama-style)."""

    format: str = go_field("format", STR)
    family: str = go_field("family", STR)
    # Real engines send null here.
    families: list[str] | None = go_field("families", list_of(STR, nil_is_none=True))
    parameter_size: str = go_field("parameter_size", STR)
    quantization_level: str = go_field("quantization_level", STR)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ModelInfo(GoStruct):
    """One downloaded or running model; ``modified_at`` defaults to Go's zero time."""

    name: str = go_field("name", STR)
    model: str = go_field("model", STR)
    modified_at: datetime = go_field("modified_at", TIME)
    size: int = go_field("size", INT)
    digest: str = go_field("digest", STR, omitempty=True)
    details: ModelDetails | None = go_field(
        "details", struct_of(ModelDetails, pointer=True), omitempty=True
    )
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ListResponse(GoStruct):
    """ListModels / GetRunningModels result (Go's ListModelsResponse); null decodes to []."""

    models: list[ModelInfo] = go_field("models", list_of(struct_of(ModelInfo)))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class PullModelRequest(GoStruct):
    """PullModel / PullModelStream request; ``stream`` is Go's ``*bool`` (None: omitted)."""

    model: str = go_field("model", STR)
    insecure: bool = go_field("insecure", BOOL, omitempty=True)
    username: str = go_field("username", STR, omitempty=True)
    password: str = go_field("password", STR, omitempty=True, repr=False)
    stream: bool | None = go_field("stream", pointer_to(BOOL), omitempty=True)
    name: str = go_field("name", STR, omitempty=True)
    model_type: str = go_field("model_type", STR, omitempty=True)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class DeleteRequest(GoStruct):
    """DeleteModel request (Go's DeleteModelRequest)."""

    model: str = go_field("model", STR)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class LoadRequest(GoStruct):
    """LoadModel request (Go's LoadModelRequest)."""

    model: str = go_field("model", STR)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class UnloadModelRequest(GoStruct):
    """UnloadModel request: the models to unload; null decodes to []."""

    models: list[str] = go_field("models", list_of(STR))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ProgressResponse(GoStruct):
    """Pull progress; ``{"error": ...}`` items keep the message in ``extra`` (see ``error``)."""

    status: str = go_field("status", STR)
    digest: str = go_field("digest", STR, omitempty=True)
    total: int = go_field("total", INT, omitempty=True)
    completed: int = go_field("completed", INT, omitempty=True)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """The ``error`` text of a failed pull item, if the plugin sent one."""
        value = self.extra.get("error")
        return value if isinstance(value, str) and value else None


@dataclass(kw_only=True)
class EngineRecommendConfig(GoStruct):
    """GetConfig result: where the engine lives and how to download it."""

    host: str = go_field("host", STR)
    origin: str = go_field("origin", STR)
    scheme: str = go_field("scheme", STR)
    recommend_model: str = go_field("recommend_model", STR)
    download_url: str = go_field("download_url", STR)
    download_path: str = go_field("download_path", STR)
    engine_path: str = go_field("engine_path", STR)
    exec_path: str = go_field("exec_path", STR)
    exec_file: str = go_field("exec_file", STR)
    device_type: str = go_field("device_type", STR)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class EngineVersionResponse(GoStruct):
    """GetVersion request and result."""

    version: str = go_field("version", STR)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class RecommendModelData(GoStruct):
    """One GetSupportModelList entry. ``is_default`` is the string "true"/"false" upstream.

    ``created_at`` is Go's method-less ``LocalTime`` (a ``time.Time`` copy): encoding/json
    always writes it as ``{}`` and reads nothing from it, so decoding gives ``{}`` too.
    """

    id: str = go_field("id", STR)
    service_name: str = go_field("service_name", STR)
    api_flavor: str = go_field("api_flavor", STR)
    flavor: str = go_field("flavor", STR)
    method: str = go_field("method", STR)
    desc: str = go_field("desc", STR)
    url: str = go_field("url", STR)
    auth_type: str = go_field("auth_type", STR)
    auth_apply_url: str = go_field("auth_apply_url", STR)
    auth_fields: list[str] | None = go_field("auth_fields", list_of(STR, nil_is_none=True))
    name: str = go_field("name", STR)
    service_provider_name: str = go_field("service_provider_name", STR)
    size: str = go_field("size", STR)
    is_recommended: bool = go_field("is_recommended", BOOL)
    status: str = go_field("status", STR)
    avatar: str = go_field("avatar", STR)
    can_select: bool = go_field("can_select", BOOL)
    class_: list[str] | None = go_field("class", list_of(STR, nil_is_none=True))
    ollama_id: str = go_field("ollama_id", STR)
    params_size: float = go_field("params_size", F32)
    input_length: int = go_field("input_length", INT)
    output_length: int = go_field("output_length", INT)
    source: str = go_field("source", STR)
    is_default: str = go_field("is_default", STR)
    think: bool = go_field("think", BOOL)
    think_switch: bool = go_field("think_switch", BOOL)
    tools: bool = go_field("tools", BOOL)
    context: float = go_field("context", F32)
    created_at: dict[str, Any] = go_field("created_at", OPAQUE)
    extra: dict[str, Any] = field(default_factory=dict)
