"""Driver: aog-plugins as the host through its asyncio API (aog_plugins.aio, grpc.aio
calls), the checkout on PYTHONPATH. See _common.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import _common as c

began_import = time.perf_counter()
from aog_plugins import RestartPolicy  # noqa: E402
from aog_plugins.aio import AsyncPlugin, launch  # noqa: E402

IMPORT_MS = (time.perf_counter() - began_import) * 1000
QUIET = logging.getLogger("bench.plugin")
QUIET.setLevel(logging.ERROR)


async def start(spec: dict[str, Any]) -> AsyncPlugin:
    return await launch(
        spec["plugin"],
        auto_mtls=spec["tls"],
        extra_env=spec.get("env") or {},
        restart=RestartPolicy.never(),
        logger=QUIET,
        install_signal_handlers=False,
    )


async def cold(spec: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    plugin = await start(spec)
    await plugin.client.health_check(timeout=30)
    first = (time.perf_counter() - began) * 1000
    await plugin.kill()
    return {"first_call_ms": first, "import_ms": IMPORT_MS}


async def calls(spec: dict[str, Any]) -> dict[str, Any]:
    plugin = await start(spec)

    async def big() -> float:
        data = json.dumps({"size": spec["big_bytes"]}).encode()
        best = float("inf")
        for _ in range(spec["big_rounds"] + 1):
            began = time.perf_counter()
            got = await plugin.client.invoke_service("big", data, timeout=120)
            assert len(got) == spec["big_bytes"], len(got)
            best = min(best, (time.perf_counter() - began) * 1000)
        return best

    try:
        return await c.async_call_rows(lambda: plugin.client.health_check(timeout=30), spec, big)
    finally:
        await plugin.kill()


async def fleet(spec: dict[str, Any]) -> dict[str, Any]:
    before = c.rss_kb()
    began = time.perf_counter()

    async def one() -> AsyncPlugin:
        plugin = await start(spec)
        await plugin.client.health_check(timeout=60)
        return plugin

    plugins = await asyncio.gather(*(one() for _ in range(spec["fleet"])))
    wall = (time.perf_counter() - began) * 1000
    after = c.rss_kb()
    await asyncio.gather(*(p.kill() for p in plugins))
    return {"wall_ms": wall, "rss_kb_per_plugin": (after - before) / spec["fleet"]}


if __name__ == "__main__":
    s = c.spec_from_argv()
    c.emit(asyncio.run({"start": cold, "calls": calls, "fleet": fleet}[s["mode"]](s)))
