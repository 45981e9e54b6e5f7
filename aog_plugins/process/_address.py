"""Where a plugin we started may ask us to connect: the address policy of the handshake.

A plugin names its own address in the handshake line, and the host dials it and later
sends it Shutdown. Without a policy a plugin (or whatever wrote that line) could point the
host at another host's plugin (which our ``kill()`` would then shut down), at a port open
to the network, or through a symlink somewhere else. For plugins this host started:

* TCP: loopback addresses only (127.0.0.0/8, ::1); not 0.0.0.0, not a host name.
* unix: the socket must lie in the directory the host gave the plugin
  (PLUGIN_UNIX_SOCKET_DIR), be reached without symlinks, be a socket, and be owned by the
  plugin's user.

``attach()`` (reattach) keeps its explicit trust: the caller named the address.
With AutoMTLS the handshake also names the certificate to pin; :class:`PinCheck` tells a
plugin serving another one from one that cannot be reached.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
from dataclasses import dataclass

import psutil

from aog_plugins.errors import AogPluginsError, PluginAddressError
from aog_plugins.handshake import HandshakeLine
from aog_plugins.transport import ClientTLS, presented_certificate, verify_failure

__all__ = ["PinCheck", "check_plugin_address"]

_FIX = (
    "plugins built with go-plugin >= 1.4.4 or aog_plugins.server do this by themselves; "
    "fix the plugin to listen on its socket in PLUGIN_UNIX_SOCKET_DIR (or on 127.0.0.1)"
)


def check_plugin_address(line: HandshakeLine, socket_dir: str, pid: int) -> None:
    """Raise :class:`PluginAddressError` unless ``line`` is an address the plugin ``pid``,
    which we started with ``socket_dir``, may ask us to dial."""
    if line.network == "tcp":
        _check_tcp(line)
    else:
        _check_unix(line.address, socket_dir, pid)


def _check_tcp(line: HandshakeLine) -> None:
    host_port = line.tcp_host_port
    assert host_port is not None
    host = host_port[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise PluginAddressError(
            f"the plugin announced TCP address {line.address!r}, a host name: this host only "
            "dials loopback IP addresses for plugins it started",
            diagnosis="make the plugin listen on and announce 127.0.0.1 (or [::1])",
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return
    if ip.is_unspecified:
        why = f"{host} means every network interface: the plugin is reachable from the network"
    else:
        why = f"{host} is not a loopback address: the plugin would be reached over the network"
    raise PluginAddressError(
        f"the plugin announced TCP address {line.address!r}; refusing to dial it: {why}",
        diagnosis="make the plugin listen on and announce 127.0.0.1 (or [::1]) only",
    )


def _check_unix(path: str, socket_dir: str, pid: int) -> None:
    shown = repr(path)
    base = os.path.normpath(socket_dir)
    normal = os.path.normpath(path)
    if not os.path.isabs(path) or os.path.commonpath([base, normal]) != base or normal == base:
        raise PluginAddressError(
            f"the plugin announced unix socket {shown}, outside the directory this host gave "
            f"it ({socket_dir}); refusing to dial it: it may be another program's socket",
            diagnosis=_FIX,
        )
    # Every component below the socket dir, the socket itself last, must be what it says.
    relative = os.path.relpath(normal, base).split(os.sep)
    current = base
    for index, part in enumerate(relative):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError as exc:
            raise PluginAddressError(
                f"the plugin announced unix socket {shown}, but {current} cannot be read "
                f"({exc.strerror}); a plugin must listen before it prints its handshake",
                diagnosis=_FIX,
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise PluginAddressError(
                f"the plugin announced unix socket {shown}, reached through the symlink "
                f"{current}; refusing to dial it: a symlink may lead to another program's "
                "socket",
                diagnosis=_FIX,
            )
        last = index == len(relative) - 1
        if last and not stat.S_ISSOCK(st.st_mode):
            raise PluginAddressError(
                f"the plugin announced unix socket {shown}, but that is not a socket",
                diagnosis=_FIX,
            )
        if last:
            owner = _plugin_uid(pid)
            if st.st_uid != owner:
                raise PluginAddressError(
                    f"the plugin announced unix socket {shown}, owned by uid {st.st_uid}, "
                    f"not by the plugin's uid {owner}; refusing to dial it: it may be "
                    "another program's socket",
                    diagnosis=_FIX,
                )


def _plugin_uid(pid: int) -> int:
    try:
        return int(psutil.Process(pid).uids().effective)
    except psutil.Error:
        # Gone already: it ran as whoever started it (us), unless set-uid; the connect
        # that follows fails anyway.
        return os.geteuid()


@dataclass(frozen=True)
class PinCheck:
    """Why a pinned TLS connection to a plugin fails, when it is the certificate: the one
    the plugin presents is not the one in its handshake line, or that one is refused
    (expired, not for "localhost"...). A diagnosis only: what it learns is never trusted."""

    line: HandshakeLine
    tls: ClientTLS
    socket_dir: str

    def __call__(self) -> str | None:
        where = (self.line.network, self.line.address)
        pinned = self.tls.plugin_cert_der
        try:
            der = presented_certificate(*where, self.tls.host, self.socket_dir, _PROBE_TIMEOUT)
            if der == pinned:
                refused = verify_failure(
                    *where,
                    self.tls.host,
                    pinned=pinned,
                    directory=self.socket_dir,
                    timeout=_PROBE_TIMEOUT,
                )
                return None if refused is None else _refused(refused)
        except (OSError, AogPluginsError):
            return None  # no TLS handshake to be had: not the certificate's fault
        return (
            f"the plugin presented a TLS certificate (SHA-256 {_fingerprint(der)}) other "
            f"than the one in its handshake line (SHA-256 {_fingerprint(pinned)}); AutoMTLS "
            "pins the handshake's certificate, so this host refuses the connection. The "
            "plugin must serve TLS with the certificate it announces in handshake field 6"
        )


_PROBE_TIMEOUT = 2.0


def _refused(reason: str) -> str:
    return (
        f"the plugin's TLS certificate (the one in its handshake line) is refused: "
        f"{reason.rstrip('.')}; "
        "AutoMTLS certificates must be valid now and name 'localhost', as go-plugin's are"
    )


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:16]
