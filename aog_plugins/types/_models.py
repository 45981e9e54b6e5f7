"""Model, engine and support-list payloads of the AOG ProviderService (plugin-sdk/types).

Field order, JSON names and ``omitempty`` follow the upstream Go struct tags. Slices whose
Go value is often nil keep ``None`` (written ``null``); the others default to ``[]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from aog_plugins.types._base import (
    BOOL,
    F32,
    INT,
    OPAQUE,
    STR,
    TIME,
    Codec,
    Field,
    GoStruct,
    list_of,
    struct_of,
)
from aog_plugins.types._gojson import GO_ZERO_TIME

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

_OPT_BOOL = Codec(BOOL.decode, BOOL.encode, lambda v: v is None, lambda: None)  # Go *bool


@dataclass(kw_only=True)
class ModelDetails(GoStruct):
    """Format and family details of a model (Ollama-style)."""

    format: str = ""
    family: str = ""
    families: list[str] | None = None  # real engines send null here
    parameter_size: str = ""
    quantization_level: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("format", "format", STR),
        Field("family", "family", STR),
        Field("families", "families", list_of(STR, nil_is_none=True)),
        Field("parameter_size", "parameter_size", STR),
        Field("quantization_level", "quantization_level", STR),
    )


@dataclass(kw_only=True)
class ModelInfo(GoStruct):
    """One downloaded or running model; ``modified_at`` defaults to Go's zero time."""

    name: str = ""
    model: str = ""
    modified_at: datetime = GO_ZERO_TIME
    size: int = 0
    digest: str = ""
    details: ModelDetails | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("name", "name", STR),
        Field("model", "model", STR),
        Field("modified_at", "modified_at", TIME),
        Field("size", "size", INT),
        Field("digest", "digest", STR, omitempty=True),
        Field("details", "details", struct_of(ModelDetails, pointer=True), omitempty=True),
    )


@dataclass(kw_only=True)
class ListResponse(GoStruct):
    """ListModels / GetRunningModels result (Go's ListModelsResponse); null decodes to []."""

    models: list[ModelInfo] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("models", "models", list_of(struct_of(ModelInfo))),
    )


@dataclass(kw_only=True)
class PullModelRequest(GoStruct):
    """PullModel / PullModelStream request; ``stream`` is Go's ``*bool`` (None: omitted)."""

    model: str = ""
    insecure: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    stream: bool | None = None
    name: str = ""
    model_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("model", "model", STR),
        Field("insecure", "insecure", BOOL, omitempty=True),
        Field("username", "username", STR, omitempty=True),
        Field("password", "password", STR, omitempty=True),
        Field("stream", "stream", _OPT_BOOL, omitempty=True),
        Field("name", "name", STR, omitempty=True),
        Field("model_type", "model_type", STR, omitempty=True),
    )


@dataclass(kw_only=True)
class DeleteRequest(GoStruct):
    """DeleteModel request (Go's DeleteModelRequest)."""

    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (Field("model", "model", STR),)


@dataclass(kw_only=True)
class LoadRequest(GoStruct):
    """LoadModel request (Go's LoadModelRequest)."""

    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (Field("model", "model", STR),)


@dataclass(kw_only=True)
class UnloadModelRequest(GoStruct):
    """UnloadModel request: the models to unload; null decodes to []."""

    models: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (Field("models", "models", list_of(STR)),)


@dataclass(kw_only=True)
class ProgressResponse(GoStruct):
    """Pull progress; ``{"error": ...}`` items keep the message in ``extra`` (see ``error``)."""

    status: str = ""
    digest: str = ""
    total: int = 0
    completed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("status", "status", STR),
        Field("digest", "digest", STR, omitempty=True),
        Field("total", "total", INT, omitempty=True),
        Field("completed", "completed", INT, omitempty=True),
    )

    @property
    def error(self) -> str | None:
        """The ``error`` text of a failed pull item, if the plugin sent one."""
        value = self.extra.get("error")
        return value if isinstance(value, str) and value else None


@dataclass(kw_only=True)
class EngineRecommendConfig(GoStruct):
    """GetConfig result: where the engine lives and how to download it."""

    host: str = ""
    origin: str = ""
    scheme: str = ""
    recommend_model: str = ""
    download_url: str = ""
    download_path: str = ""
    engine_path: str = ""
    exec_path: str = ""
    exec_file: str = ""
    device_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = tuple(
        Field(name, name, STR)
        for name in (
            "host",
            "origin",
            "scheme",
            "recommend_model",
            "download_url",
            "download_path",
            "engine_path",
            "exec_path",
            "exec_file",
            "device_type",
        )
    )


@dataclass(kw_only=True)
class EngineVersionResponse(GoStruct):
    """GetVersion request and result."""

    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (Field("version", "version", STR),)


@dataclass(kw_only=True)
class RecommendModelData(GoStruct):
    """One GetSupportModelList entry. ``is_default`` is the string "true"/"false" upstream.

    ``created_at`` is Go's method-less ``LocalTime`` (a ``time.Time`` copy): encoding/json
    always writes it as ``{}`` and reads nothing from it, so decoding gives ``{}`` too.
    """

    id: str = ""
    service_name: str = ""
    api_flavor: str = ""
    flavor: str = ""
    method: str = ""
    desc: str = ""
    url: str = ""
    auth_type: str = ""
    auth_apply_url: str = ""
    auth_fields: list[str] | None = None
    name: str = ""
    service_provider_name: str = ""
    size: str = ""
    is_recommended: bool = False
    status: str = ""
    avatar: str = ""
    can_select: bool = False
    class_: list[str] | None = None
    ollama_id: str = ""
    params_size: float = 0.0
    input_length: int = 0
    output_length: int = 0
    source: str = ""
    is_default: str = ""
    think: bool = False
    think_switch: bool = False
    tools: bool = False
    context: float = 0.0
    created_at: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("id", "id", STR),
        Field("service_name", "service_name", STR),
        Field("api_flavor", "api_flavor", STR),
        Field("flavor", "flavor", STR),
        Field("method", "method", STR),
        Field("desc", "desc", STR),
        Field("url", "url", STR),
        Field("auth_type", "auth_type", STR),
        Field("auth_apply_url", "auth_apply_url", STR),
        Field("auth_fields", "auth_fields", list_of(STR, nil_is_none=True)),
        Field("name", "name", STR),
        Field("service_provider_name", "service_provider_name", STR),
        Field("size", "size", STR),
        Field("is_recommended", "is_recommended", BOOL),
        Field("status", "status", STR),
        Field("avatar", "avatar", STR),
        Field("can_select", "can_select", BOOL),
        Field("class_", "class", list_of(STR, nil_is_none=True)),
        Field("ollama_id", "ollama_id", STR),
        Field("params_size", "params_size", F32),
        Field("input_length", "input_length", INT),
        Field("output_length", "output_length", INT),
        Field("source", "source", STR),
        Field("is_default", "is_default", STR),
        Field("think", "think", BOOL),
        Field("think_switch", "think_switch", BOOL),
        Field("tools", "tools", BOOL),
        Field("context", "context", F32),
        Field("created_at", "created_at", OPAQUE),
    )
