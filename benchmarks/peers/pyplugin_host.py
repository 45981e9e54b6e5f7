"""Driver: python-plugin 0.1.0 (grpclib, asyncio) as the host. Runs in its own venv."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import _common as c

began_import = time.perf_counter()
from grpclib.client import UnaryUnaryMethod  # noqa: E402
from pyplugin import Client, ClientConfig, HandshakeConfig, Plugin  # noqa: E402

IMPORT_MS = (time.perf_counter() - began_import) * 1000

logging.disable(logging.WARNING)
PB = c.provider_pb2()


class Stub:
    def __init__(self, channel: Any) -> None:
        self.health = UnaryUnaryMethod(
            channel, c.HEALTH, PB.HealthCheckRequest, PB.HealthCheckResponse
        )
        self.invoke = UnaryUnaryMethod(
            channel, c.INVOKE, PB.InvokeServiceRequest, PB.InvokeServiceResponse
        )


class Provider(Plugin):
    def servicers(self, broker: Any) -> list[Any]:
        return []

    def stub(self, broker: Any, channel: Any) -> Stub:
        return Stub(channel)


def config(spec: dict[str, Any]) -> ClientConfig:
    return ClientConfig(
        handshake_config=HandshakeConfig(c.APP_VERSION, c.COOKIE_KEY, c.COOKIE_VALUE),
        plugins={"provider": Provider()},
        cmd=spec["plugin"],
        auto_mtls=spec["tls"],
        env=spec.get("env") or {},
    )


async def health(stub: Stub) -> None:
    reply = await stub.health(PB.HealthCheckRequest())
    assert reply.code == 0, reply


async def cold(spec: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    client = Client(config(spec))
    await client.start()
    await health(client.dispense("provider"))
    first = (time.perf_counter() - began) * 1000
    await client.kill()
    return {"first_call_ms": first, "import_ms": IMPORT_MS}


async def big(stub: Stub, spec: dict[str, Any]) -> float:
    best = float("inf")
    request = c.big_request(PB, spec["big_bytes"])
    for _ in range(spec["big_rounds"] + 1):
        began = time.perf_counter()
        reply = await stub.invoke(request)
        assert len(reply.response_data) == spec["big_bytes"], (reply.code, reply.message)
        best = min(best, (time.perf_counter() - began) * 1000)
    return best


async def calls(spec: dict[str, Any]) -> dict[str, Any]:
    client = Client(config(spec))
    await client.start()
    stub = client.dispense("provider")
    try:
        return await c.async_call_rows(lambda: health(stub), spec, lambda: big(stub, spec))
    finally:
        await client.kill()


async def fleet(spec: dict[str, Any]) -> dict[str, Any]:
    before = c.rss_kb()
    began = time.perf_counter()

    async def one() -> Client:
        client = Client(config(spec))
        await client.start()
        await health(client.dispense("provider"))
        return client

    clients = await asyncio.gather(*(one() for _ in range(spec["fleet"])))
    wall = (time.perf_counter() - began) * 1000
    after = c.rss_kb()
    await asyncio.gather(*(cl.kill() for cl in clients))
    return {"wall_ms": wall, "rss_kb_per_plugin": (after - before) / spec["fleet"]}


if __name__ == "__main__":
    s = c.spec_from_argv()
    c.emit(asyncio.run({"start": cold, "calls": calls, "fleet": fleet}[s["mode"]](s)))
