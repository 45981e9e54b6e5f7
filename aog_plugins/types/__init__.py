"""AOG JSON payloads as dataclasses whose JSON is byte-identical to Go's encoding/json.

Every type has ``to_json()``/``to_dict()`` and ``from_json()``/``from_dict()``. Field
order, names and ``omitempty`` follow the upstream Go struct tags (intel/aog plugin-sdk);
unknown keys are kept in ``extra`` and written back after the known ones; a wrong JSON type
for a known key raises :class:`aog_plugins.errors.PayloadError`.

Choices where Python and Go differ:

- Go nil slices: ``ModelDetails.families`` and ``RecommendModelData.auth_fields``/``class_``
  are ``None`` (``null``) by default, as Go's values usually are; other slices are lists
  where ``null`` decodes to ``[]`` and ``[]`` is written. Go treats both alike.
- Times are RFC 3339 with up to nine fractional digits; :class:`NanoDatetime` keeps the
  nanoseconds a ``datetime`` cannot hold. A naive datetime is written as UTC.
- float32 fields (``params_size``, ``context``) are rounded to float32 and printed with
  float32's shortest digits, as Go does.
"""

from aog_plugins.types._base import GoStruct
from aog_plugins.types._gojson import (
    GO_ZERO_TIME,
    NanoDatetime,
    format_go_time,
    go_dumps,
    go_loads,
    parse_go_time,
)
from aog_plugins.types._manifest import (
    MANIFEST_FILENAMES,
    OllamaConfig,
    PlatformConfig,
    PluginManifest,
    ProviderInfo,
    ResourcesConfig,
    ServiceCapabilities,
    ServiceDef,
    go_arch,
    go_os,
)
from aog_plugins.types._models import (
    DeleteRequest,
    EngineRecommendConfig,
    EngineVersionResponse,
    ListResponse,
    LoadRequest,
    ModelDetails,
    ModelInfo,
    ProgressResponse,
    PullModelRequest,
    RecommendModelData,
    UnloadModelRequest,
)
from aog_plugins.types._stream import BidiMessage, StreamChunk

__all__ = [
    "GO_ZERO_TIME",
    "MANIFEST_FILENAMES",
    "BidiMessage",
    "DeleteRequest",
    "EngineRecommendConfig",
    "EngineVersionResponse",
    "GoStruct",
    "ListResponse",
    "LoadRequest",
    "ModelDetails",
    "ModelInfo",
    "NanoDatetime",
    "OllamaConfig",
    "PlatformConfig",
    "PluginManifest",
    "ProgressResponse",
    "ProviderInfo",
    "PullModelRequest",
    "RecommendModelData",
    "ResourcesConfig",
    "ServiceCapabilities",
    "ServiceDef",
    "StreamChunk",
    "UnloadModelRequest",
    "format_go_time",
    "go_arch",
    "go_dumps",
    "go_loads",
    "go_os",
    "parse_go_time",
]
