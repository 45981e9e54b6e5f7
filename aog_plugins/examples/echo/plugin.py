#!/usr/bin/env python3
"""The example plugin behind ``aog-plugins demo``: an AOG provider written in Python.

``chat`` answers a request with the request itself; streamed, it sends ``{"chunks": N}``
(default 3) numbered chunks and a final one. SetAuth keeps the credentials (a remote
provider would send them upstream); only their names are logged. Every call is logged
(the host turns the plugin's log lines into ``logging`` records). ``--network tcp`` (or
``AOG_EXAMPLE_NETWORK=tcp`` in its environment) listens on TCP instead of a unix socket.
Run it from a go-plugin host (``aog-plugins inspect``), not by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from aog_plugins.errors import PluginError
from aog_plugins.server import serve_provider
from aog_plugins.types import PluginManifest, StreamChunk

log = logging.getLogger("echo")

NETWORK_ENV = "AOG_EXAMPLE_NETWORK"
UNKNOWN_SERVICE = 4000
NO_CREDENTIALS = 1002


class EchoProvider:
    """Implements the ``RemotePluginProvider`` and ``StreamablePlugin`` protocols of
    :mod:`aog_plugins.contract`."""

    def __init__(self, manifest: PluginManifest) -> None:
        self._manifest = manifest
        self._status = 0
        self._credentials: dict[str, str] = {}

    def get_manifest(self) -> PluginManifest:
        return self._manifest

    def get_operate_status(self) -> int:
        return self._status

    def set_operate_status(self, status: int) -> None:
        self._status = status

    def health_check(self) -> None:
        return None

    def set_auth(self, auth_type: str, credentials: Mapping[str, str]) -> None:
        self._credentials = dict(credentials)
        log.info("credentials set", extra={"auth_type": auth_type, "keys": sorted(credentials)})

    def validate_auth(self) -> None:
        if not self._credentials:
            raise PluginError(NO_CREDENTIALS, "no credentials: call SetAuth first")

    def refresh_auth(self) -> None:
        self.validate_auth()

    def _check(self, service_name: str, request: bytes) -> None:
        log.info("invoke", extra={"service": service_name, "bytes": len(request)})
        if service_name != "chat":
            raise PluginError(UNKNOWN_SERVICE, f"unknown service {service_name!r}")

    def invoke_service(self, service_name: str, request: bytes, auth_info: str = "") -> bytes:
        self._check(service_name, request)
        return request

    def invoke_service_stream(
        self, service_name: str, request: bytes, auth_info: str = ""
    ) -> Iterator[StreamChunk]:
        self._check(service_name, request)
        try:
            options = json.loads(request or b"{}")
        except ValueError as exc:
            raise PluginError(4003, f"request is not JSON: {exc}") from None
        count = options.get("chunks", 3) if isinstance(options, dict) else 3
        if not isinstance(count, int) or not 0 <= count <= 1000:
            raise PluginError(4003, "chunks must be an integer from 0 to 1000")
        return self._chunks(count)

    def _chunks(self, count: int) -> Iterator[StreamChunk]:
        for index in range(count):
            yield StreamChunk(data=json.dumps({"index": index}).encode())
        yield StreamChunk(is_final=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--network", choices=["unix", "tcp"], default=os.environ.get(NETWORK_ENV, "unix")
    )
    args = parser.parse_args(argv)
    manifest = PluginManifest.load(Path(__file__).resolve().parent)

    def ready() -> None:
        # Written after the handshake, so these travel to the host over GRPCStdio.
        print("echo plugin ready", flush=True)
        print("echo plugin stderr note", file=sys.stderr, flush=True)
        log.info("echo plugin serving", extra={"network": args.network})

    serve_provider(EchoProvider(manifest), network=args.network, on_ready=ready)


if __name__ == "__main__":
    main()
