"""Driver: the least a grpcio host can do, with no plugin library at all (the floor).

It spawns the plugin with the cookie and protocol versions in its environment, reads the
handshake line, opens a plain grpcio channel and calls; nothing else: no stdio or broker
stream, no reaper, no supervision, no output read after the handshake. Plaintext only:
grpcio cannot verify go-plugin's P-521 certificates (docs/interop.md), so an AutoMTLS
host needs a relay of its own. What this column cannot beat, no grpcio-based host can.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import _common as c

began_import = time.perf_counter()
import grpc  # noqa: E402

IMPORT_MS = (time.perf_counter() - began_import) * 1000
PB = c.provider_pb2()
NO_TLS = "grpcio cannot verify go-plugin's P-521 certificates (a host needs a relay)"


class Bare:
    """One plugin process and a channel to it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.dir = tempfile.mkdtemp(prefix="floor-", dir="/tmp")
        env = {
            **os.environ,
            **(spec.get("env") or {}),
            c.COOKIE_KEY: c.COOKIE_VALUE,
            "PLUGIN_PROTOCOL_VERSIONS": str(c.APP_VERSION),
            "PLUGIN_UNIX_SOCKET_DIR": self.dir,
        }
        self.proc = subprocess.Popen(
            spec["plugin"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip().split("|")
        network, address = line[2], line[3]
        target = f"unix:{address}" if network == "unix" else address
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.health_rpc = self.channel.unary_unary(
            c.HEALTH,
            request_serializer=PB.HealthCheckRequest.SerializeToString,
            response_deserializer=PB.HealthCheckResponse.FromString,
        )
        self.invoke_rpc = self.channel.unary_unary(
            c.INVOKE,
            request_serializer=PB.InvokeServiceRequest.SerializeToString,
            response_deserializer=PB.InvokeServiceResponse.FromString,
        )

    def health(self) -> None:
        reply = self.health_rpc(PB.HealthCheckRequest(), timeout=30)
        assert reply.code == 0, reply

    def kill(self) -> None:
        self.channel.close()
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def cold(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["tls"]:
        return {"first_call_ms": NO_TLS, "import_ms": IMPORT_MS}
    began = time.perf_counter()
    bare = Bare(spec)
    bare.health()
    first = (time.perf_counter() - began) * 1000
    bare.kill()
    return {"first_call_ms": first, "import_ms": IMPORT_MS}


def calls(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["tls"]:
        return {"p50_us": NO_TLS, "cpu_us": NO_TLS, "ops_s": NO_TLS}
    bare = Bare(spec)
    try:
        p50, cpu = c.p50_us(bare.health, spec["unary_calls"], spec["warmup"])
        out: dict[str, Any] = {
            "p50_us": p50,
            "cpu_us": cpu,
            "ops_s": c.guarded(
                lambda: c.thread_throughput(bare.health, spec["parallel"], spec["per_worker"])
            ),
        }
        if spec.get("big_bytes"):
            request = c.big_request(PB, spec["big_bytes"])

            def big() -> float:
                def call() -> bytes:
                    return bytes(bare.invoke_rpc(request, timeout=120).response_data)

                return c.best_ms(call, spec["big_bytes"], spec["big_rounds"])

            out["big_ms"] = c.guarded(big)
        return out
    finally:
        bare.kill()


def fleet(spec: dict[str, Any]) -> dict[str, Any]:
    def one() -> Bare:
        bare = Bare(spec)
        bare.health()
        return bare

    return c.fleet_of(one, Bare.kill, spec["fleet"])


if __name__ == "__main__":
    s = c.spec_from_argv()
    c.emit({"start": cold, "calls": calls, "fleet": fleet}[s["mode"]](s))
