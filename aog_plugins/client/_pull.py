"""What a model pull's stream can say beyond progress: an ``{"error": ...}`` item, or
that the plugin has no PullModelStream at all (then ``pull_model`` falls back to the
unary PullModel RPC, which every AOG local plugin has: AOG's own host only uses that one).
"""

from __future__ import annotations

import re

from aog_plugins.errors import PayloadError, PluginCallError, PluginCrashedError, PluginError
from aog_plugins.types import go_loads

__all__ = ["MODEL_PULL_FAILED", "error_item", "stream_missing"]

MODEL_PULL_FAILED = 3001
"""AOG's ErrCodeModelPullFailed: the code of the :class:`PluginError` raised for a
progress item ``{"error": "..."}`` (such an item arrives with code 0, so the plugin gave
no code of its own; its text is kept as the error's message)."""

# AOG's types.ErrCodeUnimplemented and ErrCodeServiceStreamingNotSupported.
_NOT_IMPLEMENTED_CODES = frozenset({10, 4005})
_INTERNAL = 11
# How a code-11 failure says the stream is missing: the SDK's default adapter ("... must
# be implemented by plugin"), our server for a provider raising NotImplementedError, and
# plain wording.
_NOT_IMPLEMENTED_TEXT = re.compile(
    r"must be implemented|not implemented|NotImplementedError|not supported", re.IGNORECASE
)


def error_item(data: bytes) -> str | None:
    """The text of a progress item ``{"error": ...}`` (Ollama's failure shape), else None.

    Parsed as the item itself is (Go's rules): an item that is not such JSON is left to
    the decoding, which says what is wrong with it."""
    try:
        doc = go_loads(data)
    except PayloadError:
        return None
    if isinstance(doc, dict) and doc.get("error"):
        return str(doc["error"])
    return None


def stream_missing(error: PluginError | PluginCallError) -> bool:
    """True when a PullModelStream that failed before any progress item did so because
    the plugin does not implement it: gRPC UNIMPLEMENTED, AOG code 10 or 4005, or code 11
    whose message says "not implemented" / "must be implemented" / "not supported"."""
    if isinstance(error, PluginCallError):
        return not isinstance(error, PluginCrashedError) and error.code == "UNIMPLEMENTED"
    if error.code in _NOT_IMPLEMENTED_CODES:
        return True
    return error.code == _INTERNAL and bool(_NOT_IMPLEMENTED_TEXT.search(error.message))
