"""Driver: pyvider-rpcplugin 0.5.5 (grpc.aio) as the host. Runs in its own venv; pyvider
reads its settings (cookie, AutoMTLS) from the environment, set before it is imported."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import _common as c

SPEC = c.spec_from_argv()
os.environ.update(
    {
        "PLUGIN_MAGIC_COOKIE_KEY": c.COOKIE_KEY,
        "PLUGIN_MAGIC_COOKIE_VALUE": c.COOKIE_VALUE,
        "PLUGIN_PROTOCOL_VERSIONS": str(c.APP_VERSION),
        "PLUGIN_AUTO_MTLS": "true" if SPEC["tls"] else "false",
        "PLUGIN_LOG_LEVEL": "ERROR",
        "PLUGIN_SHOW_EMOJI_MATRIX": "false",
        # Fail a start in 10 s, not pyvider's default 30 s (its AutoMTLS start fails).
        "PLUGIN_HANDSHAKE_TIMEOUT": "10",
        "PLUGIN_CLIENT_RETRY_TOTAL_TIMEOUT_S": "10",
    }
)
logging.disable(logging.WARNING)

began_import = time.perf_counter()
from pyvider.rpcplugin import RPCPluginClient  # noqa: E402

IMPORT_MS = (time.perf_counter() - began_import) * 1000

PB = c.provider_pb2()


class Stub:
    def __init__(self, channel: Any) -> None:
        self.health = channel.unary_unary(
            c.HEALTH,
            request_serializer=PB.HealthCheckRequest.SerializeToString,
            response_deserializer=PB.HealthCheckResponse.FromString,
        )
        self.invoke = channel.unary_unary(
            c.INVOKE,
            request_serializer=PB.InvokeServiceRequest.SerializeToString,
            response_deserializer=PB.InvokeServiceResponse.FromString,
        )


def client_for(spec: dict[str, Any]) -> RPCPluginClient:
    return RPCPluginClient(command=spec["plugin"], config={"env": spec.get("env") or {}})


async def health(stub: Stub) -> None:
    reply = await stub.health(PB.HealthCheckRequest(), timeout=30)
    assert reply.code == 0, reply


async def stop(client: RPCPluginClient) -> None:
    try:
        await client.shutdown_plugin()
    finally:
        await client.close()


async def cold(spec: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    client = client_for(spec)
    try:
        await asyncio.wait_for(client.start(), 60)
        await health(Stub(client.grpc_channel))
        first = (time.perf_counter() - began) * 1000
    except Exception as exc:
        await client.close()
        return {"first_call_ms": c.reason(exc), "import_ms": IMPORT_MS}
    await stop(client)
    return {"first_call_ms": first, "import_ms": IMPORT_MS}


async def big(stub: Stub, spec: dict[str, Any]) -> float:
    best = float("inf")
    request = c.big_request(PB, spec["big_bytes"])
    for _ in range(spec["big_rounds"] + 1):
        began = time.perf_counter()
        reply = await stub.invoke(request, timeout=120)
        assert len(reply.response_data) == spec["big_bytes"], (reply.code, reply.message)
        best = min(best, (time.perf_counter() - began) * 1000)
    return best


async def calls(spec: dict[str, Any]) -> dict[str, Any]:
    client = client_for(spec)
    try:
        await asyncio.wait_for(client.start(), 60)
    except Exception as exc:
        await client.close()
        reason = c.reason(exc)
        return {"p50_us": reason, "cpu_us": reason, "ops_s": reason, "big_ms": reason}
    stub = Stub(client.grpc_channel)
    try:
        return await c.async_call_rows(lambda: health(stub), spec, lambda: big(stub, spec))
    finally:
        await stop(client)


async def fleet(spec: dict[str, Any]) -> dict[str, Any]:
    before = c.rss_kb()
    began = time.perf_counter()

    async def one() -> RPCPluginClient:
        client = client_for(spec)
        await asyncio.wait_for(client.start(), 120)
        await health(Stub(client.grpc_channel))
        return client

    clients = await asyncio.gather(*(one() for _ in range(spec["fleet"])), return_exceptions=True)
    wall = (time.perf_counter() - began) * 1000
    after = c.rss_kb()
    await asyncio.gather(*(stop(cl) for cl in clients if isinstance(cl, RPCPluginClient)))
    failed = [cl for cl in clients if not isinstance(cl, RPCPluginClient)]
    if failed:
        return {"wall_ms": f"{len(failed)} of {spec['fleet']} failed: {failed[0]!r}"[:160]}
    return {"wall_ms": wall, "rss_kb_per_plugin": (after - before) / spec["fleet"]}


if __name__ == "__main__":
    c.emit(asyncio.run({"start": cold, "calls": calls, "fleet": fleet}[SPEC["mode"]](SPEC)))
