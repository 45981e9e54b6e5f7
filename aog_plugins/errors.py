"""The one exception tree of aog-plugins.

Everything this library raises on purpose derives from :class:`AogPluginsError`::

    AogPluginsError
    ├── ConfigurationError            a bad argument from the caller (nothing was started)
    │   ├── ManifestKeyError            no such service/platform in a manifest (also a KeyError)
    │   ├── NoPluginForServiceError     no usable plugin of a plugins directory serves a service
    │   └── AmbiguousServiceError       several plugins serve it: name the one to use
    ├── PluginEntryError              a plugin directory the manager cannot use (nothing was run)
    │   ├── InvalidManifestError        plugin.yaml / plugin.json cannot be read or parsed
    │   ├── MissingProviderNameError    the manifest has no ``provider.name``
    │   ├── InvalidProviderTypeError    ``provider.type`` is neither local nor remote
    │   ├── NoPlatformError             no executable for this machine's ``<goos>_<goarch>``
    │   ├── ExecutableMissingError      the executable it names does not exist
    │   ├── ExecutableNotExecutableError  it exists but is not runnable (never chmodded for you)
    │   ├── DuplicatePluginError        another directory already provides the name
    │   ├── PluginChecksumError         its checksum does not match (a ChecksumMismatchError too)
    │   └── UnknownPluginError          no plugin of that name (also a KeyError)
    ├── PluginStartError              the plugin could not be started; nothing is left running
    │   ├── PluginNotFoundError         the executable does not exist
    │   ├── PluginNotExecutableError    it exists but cannot be executed (mode, format, arch)
    │   ├── CookieRejectedError         it refused to run: the magic cookie did not match
    │   ├── PluginExitedError           it exited before it printed the handshake
    │   ├── StartTimeoutError           no handshake line within ``start_timeout``
    │   ├── ChecksumMismatchError       SecureConfig: the executable is not the expected one
    │   ├── HostResourceError           the host ran out of files, memory or disk while starting
    │   ├── PluginAddressError          the handshake points somewhere this host will not dial
    │   └── HandshakeError              the handshake line was printed but is unusable
    │       ├── MalformedHandshakeError     not ``CORE|APP|NETWORK|ADDRESS[|PROTOCOL[|CERT[|MUX]]]``
    │       ├── IncompatibleCoreVersionError
    │       ├── IncompatibleAppVersionError
    │       ├── UnknownNetworkError         network is neither ``unix`` nor ``tcp``
    │       ├── UnsupportedProtocolError    not ``grpc`` (netrpc has no Python host)
    │       └── ServerCertificateError      field 6 is not a usable certificate
    ├── CertificateError              a PEM/DER certificate could not be read
    ├── PluginConnectError            started, but the gRPC connection or health check failed
    │   └── PluginUnhealthyError        the health service answered NOT_SERVING
    ├── ReattachError                 a reattach config is invalid or its plugin is gone
    ├── BrokerError                   a GRPCBroker sub-connection could not be served or dialed
    ├── PayloadError                  a JSON payload for or from a plugin is not valid
    ├── PluginCallError               an RPC failed in transport (carries whether the process died)
    │   ├── PluginCrashedError          the plugin died during the call (exit code, stderr tail)
    │   └── PluginFatalError            the plugin is FATAL or stopped: calls fail fast
    │       └── PluginRemovedError          its directory was removed (or the manager closed)
    └── PluginError                   the plugin answered with an AOG failure ``code``/``message``

Start failures carry what the plugin left behind: ``exit_code`` (``None`` while it was
still running, negative for a signal), ``stderr_tail`` and a one-line ``diagnosis``.
"""

from __future__ import annotations

import re

__all__ = [
    "AmbiguousServiceError",
    "AogPluginsError",
    "BrokerError",
    "CertificateError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "CookieRejectedError",
    "DuplicatePluginError",
    "ExecutableMissingError",
    "ExecutableNotExecutableError",
    "HandshakeError",
    "HostResourceError",
    "IncompatibleAppVersionError",
    "IncompatibleCoreVersionError",
    "InvalidManifestError",
    "InvalidProviderTypeError",
    "MalformedHandshakeError",
    "ManifestKeyError",
    "MissingProviderNameError",
    "NoPlatformError",
    "NoPluginForServiceError",
    "PayloadError",
    "PluginAddressError",
    "PluginCallError",
    "PluginChecksumError",
    "PluginConnectError",
    "PluginCrashedError",
    "PluginEntryError",
    "PluginError",
    "PluginExitedError",
    "PluginFatalError",
    "PluginNotExecutableError",
    "PluginNotFoundError",
    "PluginRemovedError",
    "PluginStartError",
    "PluginUnhealthyError",
    "ReattachError",
    "ServerCertificateError",
    "StartTimeoutError",
    "UnknownNetworkError",
    "UnknownPluginError",
    "UnsupportedProtocolError",
    "printable",
]


# C0 controls but tab, DEL, C1 controls (CSI is U+009B), the Unicode line separators and
# lone surrogates (a JSON escape can make one; no UTF-8 log file or terminal can take it).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
_SHOWN_MAX = 2048
"""Characters of a plugin's own text (an AOG message) an error's ``str`` shows at most."""


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def printable(text: str, *, newlines: bool = False, limit: int | None = None) -> str:
    """``text`` from a plugin with its control characters (ESC, CR, BEL, C1 ...; newlines
    too unless ``newlines``; lone surrogates) written as escapes (``\\x1b``, ``\\r``,
    ``\\udcff``), cut to ``limit`` characters when given: a plugin's output or message,
    logged or shown in an error, cannot drive the reader's terminal, forge a line of the
    log or make a UTF-8 log handler drop the record."""
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters in all)"
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_escape, text)


class AogPluginsError(Exception):
    """Base of every error aog-plugins raises on purpose."""


class ConfigurationError(AogPluginsError, ValueError):
    """An argument the caller passed is unusable; nothing was started."""


class ManifestKeyError(ConfigurationError, KeyError):
    """A manifest has no service or platform by that name; ``available`` lists the ones it has."""

    def __init__(self, kind: str, key: str, available: tuple[str, ...]) -> None:
        super().__init__(kind, key, available)
        self.kind = kind
        self.key = key
        self.available = available

    def __str__(self) -> str:  # KeyError would print the repr of the args
        names = ", ".join(self.available) or "none"
        return f"no {self.kind} {self.key!r} in the manifest (available: {names})"


class PayloadError(AogPluginsError, ValueError):
    """A JSON payload from or for a plugin could not be decoded or encoded."""


class CertificateError(AogPluginsError):
    """A certificate (PEM or DER) could not be parsed or has the wrong kind of key."""


class PluginStartError(AogPluginsError):
    """The plugin could not be started. The process, if any, has been killed and reaped.

    ``exit_code`` is the plugin's exit status (negative: killed by that signal; ``None``:
    it had not exited when we gave up and killed it). ``stderr_tail`` holds its last
    stderr lines, ``diagnosis`` a hint at the cause and ``command`` what was run.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        stderr_tail: str = "",
        diagnosis: str = "",
        command: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.diagnosis = diagnosis
        self.command = command

    def add_context(
        self,
        *,
        exit_code: int | None,
        stderr_tail: str,
        command: tuple[str, ...],
        diagnosis: str | None = None,
    ) -> None:
        """Attach what the failed process left behind (used by the process layer)."""
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.command = command
        if diagnosis:
            self.diagnosis = diagnosis

    def __str__(self) -> str:
        parts = [self.message]
        if self.command:
            parts.append(f"command: {' '.join(self.command)}")
        if self.exit_code is not None:
            if self.exit_code < 0:
                parts.append(f"killed by signal {-self.exit_code}")
            else:
                parts.append(f"exit code {self.exit_code}")
        if self.diagnosis:
            parts.append(f"diagnosis: {self.diagnosis}")
        text = "; ".join(parts)
        if self.stderr_tail:
            text += "\n--- plugin stderr (last lines) ---\n" + self.stderr_tail.rstrip("\n")
        return text


class PluginNotFoundError(PluginStartError):
    """The plugin executable does not exist."""


class PluginNotExecutableError(PluginStartError):
    """The file exists but the OS refused to execute it (permissions, format, architecture)."""


class CookieRejectedError(PluginStartError):
    """The plugin exited saying it is a plugin not meant to be run directly: cookie mismatch."""


class PluginExitedError(PluginStartError):
    """The plugin exited before printing its handshake line."""


class StartTimeoutError(PluginStartError):
    """The plugin printed no handshake line within the start timeout."""


class ChecksumMismatchError(PluginStartError):
    """The executable's checksum differs from the one the caller expected."""


class HostResourceError(PluginStartError):
    """The host, not the plugin, ran short: file descriptors (EMFILE), memory, processes or
    disk space (ENOSPC) while preparing or spawning the plugin. Nothing is left running."""


class PluginAddressError(PluginStartError):
    """The handshake names an address this host refuses to dial for a plugin it started:
    TCP that is not loopback, or a unix socket outside the directory the host gave the
    plugin, owned by another user, or reached through a symlink."""


class HandshakeError(PluginStartError):
    """The plugin's handshake line is unusable. ``line`` holds the text received."""

    def __init__(self, message: str, *, line: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.line = line


class MalformedHandshakeError(HandshakeError):
    """The first stdout line is not a go-plugin handshake (wrong field count, not numbers)."""


class IncompatibleCoreVersionError(HandshakeError):
    """The plugin speaks another go-plugin core protocol version (only 1 exists)."""


class IncompatibleAppVersionError(HandshakeError):
    """The plugin's app protocol version is not one the host offered."""


class UnknownNetworkError(HandshakeError):
    """The handshake's network field is neither ``unix`` nor ``tcp``."""


class UnsupportedProtocolError(HandshakeError):
    """The plugin serves a protocol this host cannot speak (netrpc, or unknown)."""


class ServerCertificateError(HandshakeError):
    """The certificate in handshake field 6 is not valid base64 DER."""


class PluginConnectError(AogPluginsError):
    """The plugin started, but connecting or health-checking it failed; it has been killed."""


class PluginUnhealthyError(PluginConnectError):
    """The plugin's health service reports NOT_SERVING for service ``plugin``."""


class ReattachError(AogPluginsError):
    """A reattach config is malformed, or the plugin it names is not running."""


class BrokerError(AogPluginsError):
    """A GRPCBroker sub-connection failed: no connection info for the id in time, the
    broker is closed, or the peer refused (its message is included)."""


class PluginCallError(AogPluginsError):
    """An RPC to the plugin failed in transport.

    ``code`` is the gRPC status code name, ``process_exited`` says whether the plugin
    process was found dead, so a caller can tell a crash from a slow plugin.
    """

    def __init__(self, message: str, *, code: str = "", process_exited: bool = False) -> None:
        # Our own text may span lines (a crash's stderr tail); what a plugin sent in it was
        # escaped where it was put in (see call_error), this is the last line of defence.
        super().__init__(printable(message, newlines=True))
        self.code = code
        self.process_exited = process_exited


class PluginCrashedError(PluginCallError):
    """The plugin process died while the call was in flight (or before it could be sent).

    ``exit_code`` is its exit status (negative: the signal), ``stderr_tail`` its last
    stderr lines; ``stopped_by_host`` says why, when this host stopped it for good (a
    ``kill()``, a signal to this host) rather than the plugin dying on its own. With a
    restart policy the next call goes to the restarted plugin.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        exit_code: int | None = None,
        stderr_tail: str = "",
        stopped_by_host: str | None = None,
    ) -> None:
        super().__init__(message, code=code, process_exited=True)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.stopped_by_host = stopped_by_host


class PluginFatalError(PluginCallError):
    """The plugin is FATAL (its restart budget is spent) or stopped: calls fail fast."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message, code=code, process_exited=True)


class PluginError(AogPluginsError):
    """The plugin answered with an AOG failure: a ``code`` other than 0 or 200.

    ``message`` is the plugin's text as sent; ``str()`` shows it with control characters
    escaped and cut to 2048 characters.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"plugin error {code}: {printable(message, limit=_SHOWN_MAX)}")
        self.code = code
        self.message = message


# ---- plugin manager (aog_plugins.manager) ----------------------------------------------
# One contiguous block: every error about a plugin *directory* names the plugin, its
# directory and what to do. Listed in ``__all__`` below, not in the tree above, so this
# block merges cleanly with edits elsewhere in this file.


class PluginEntryError(AogPluginsError):
    """A plugin directory the manager cannot use (nothing of it was run).

    ``plugin`` is the provider name (or the directory's name when the manifest has none),
    ``directory`` the plugin's root, ``hint`` what to do about it.
    """

    def __init__(self, message: str, *, plugin: str, directory: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.plugin = plugin
        self.directory = directory
        self.hint = hint

    def __str__(self) -> str:
        text = f"plugin {self.plugin!r} ({self.directory}): {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


class InvalidManifestError(PluginEntryError):
    """plugin.yaml / plugin.json cannot be read or parsed."""


class MissingProviderNameError(PluginEntryError):
    """The manifest has no ``provider.name``."""


class InvalidProviderTypeError(PluginEntryError):
    """``provider.type`` is neither ``local`` nor ``remote``."""


class NoPlatformError(PluginEntryError):
    """The manifest has no ``platforms.<goos>_<goarch>`` entry (or no executable) for this
    machine."""


class ExecutableMissingError(PluginEntryError):
    """The executable the manifest names for this machine does not exist."""


class ExecutableNotExecutableError(PluginEntryError):
    """The executable exists but is not a runnable file (the manager never chmods it)."""


class DuplicatePluginError(PluginEntryError):
    """Another plugin directory already provides this name; the first one keeps it."""


class PluginChecksumError(PluginEntryError, ChecksumMismatchError):
    """The executable does not match the configured checksum: it was not run."""


class UnknownPluginError(PluginEntryError, KeyError):
    """No plugin of that name in the directory."""


class PluginRemovedError(PluginFatalError):
    """The plugin was removed from the directory (or the manager closed): calls fail fast."""


class NoPluginForServiceError(ConfigurationError):
    """No usable plugin of the plugins directory serves the service asked for."""


class AmbiguousServiceError(ConfigurationError):
    """Several plugins of the plugins directory serve the service; name the one to use."""
