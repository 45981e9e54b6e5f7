"""What a failed start raises: our own errors as they are, anything else wrapped in a
typed start error, and a diagnosis for the handshake errors that carry none."""

from __future__ import annotations

import errno

from aog_plugins.errors import (
    AogPluginsError,
    HostResourceError,
    IncompatibleAppVersionError,
    IncompatibleCoreVersionError,
    PluginStartError,
    ServerCertificateError,
    UnknownNetworkError,
    UnsupportedProtocolError,
)

__all__ = ["default_diagnosis", "typed_start_error"]

_RESOURCE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
)


_DIAGNOSES: tuple[tuple[type[PluginStartError], str], ...] = (
    (
        IncompatibleCoreVersionError,
        "the plugin was built with a go-plugin that speaks another core protocol; rebuild it",
    ),
    (
        IncompatibleAppVersionError,
        "host and plugin share no app protocol version: use a plugin built for the offered "
        "version, or offer the plugin's version with launch(versions=[...])",
    ),
    (
        UnsupportedProtocolError,
        "only gRPC plugins can be hosted from Python, with gRPC broker multiplexing exactly "
        "when launch(multiplex=True) asks for it and the plugin announces it (handshake "
        "field 7): the message says which side differs",
    ),
    (
        UnknownNetworkError,
        "the plugin announced a network other than unix or tcp: it is not a go-plugin "
        "plugin, or uses a transport this host does not speak",
    ),
    (
        ServerCertificateError,
        "the plugin's AutoMTLS certificate is missing or unusable: launch with "
        "auto_mtls=False, or fix the plugin's certificate",
    ),
)


def default_diagnosis(error: PluginStartError) -> str:
    for kind, text in _DIAGNOSES:
        if isinstance(error, kind):
            return text
    return "the plugin was still running and has been stopped; the message says what was wrong"


def typed_start_error(exc: BaseException, stage: str) -> BaseException:
    """``exc`` if it is one of ours (or not an Exception, like KeyboardInterrupt), else a
    start error that says what happened; the original stays chained as its cause."""
    if isinstance(exc, AogPluginsError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return HostResourceError(
            f"{stage} failed: the host is out of resources: {exc}",
            diagnosis="free disk space, memory or file descriptors on the host and retry; "
            "the plugin was stopped",
        )
    return PluginStartError(
        f"{stage} failed unexpectedly: {type(exc).__name__}: {exc}",
        diagnosis="the plugin was stopped; the chained exception says more (please report it "
        "as a bug of aog-plugins if the plugin is not at fault)",
    )
