"""Shared by the benchmark drivers: each runs in its own interpreter (ours, or a peer's
throwaway venv), reads one JSON spec from argv[1] and prints one JSON result line.

Only the standard library and google.protobuf are assumed here, so every venv can use it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HEALTH = "/protocol.ProviderService/HealthCheck"
INVOKE = "/protocol.ProviderService/InvokeService"
COOKIE_KEY, COOKIE_VALUE, APP_VERSION = "AOG_PLUGIN", "aog-provider-plugin-v1", 1


def provider_pb2() -> ModuleType:
    """Our generated provider messages, loaded by path (needs only google.protobuf)."""
    path = REPO / "aog_plugins" / "_proto" / "provider_pb2.py"
    spec = importlib.util.spec_from_file_location("bench_provider_pb2", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_from_argv() -> dict[str, Any]:
    return dict(json.loads(sys.argv[1]))


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def guarded(fn: Callable[[], float]) -> float | str:
    """A figure, or the reason the row could not be done (first line of the error)."""
    try:
        return fn()
    except Exception as exc:  # the cell says why
        return reason(exc)


def reason(exc: BaseException) -> str:
    """One line saying why: gRPC errors by code and details."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        text = [f"{type(exc).__name__} {code()}: {details()}"]
    else:
        text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def p50_us(call: Callable[[], object], n: int, warmup: int) -> tuple[float, float]:
    """Median latency of ``call`` and the host process's CPU time per call (all threads:
    the relay's too), both in microseconds."""
    for _ in range(warmup):
        call()
    times = []
    cpu = time.process_time_ns()
    for _ in range(n):
        began = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - began)
    return statistics.median(times) / 1000, (time.process_time_ns() - cpu) / n / 1000


def thread_throughput(call: Callable[[], object], parallel: int, per_worker: int) -> float:
    """Calls per second of ``parallel`` threads making ``per_worker`` calls each."""
    for _ in range(20):
        call()
    gate = threading.Barrier(parallel + 1)

    def work() -> None:
        gate.wait()
        for _ in range(per_worker):
            call()

    threads = [threading.Thread(target=work) for _ in range(parallel)]
    for t in threads:
        t.start()
    gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return parallel * per_worker / (time.perf_counter() - began)


def best_ms(call: Callable[[], bytes], size: int, rounds: int) -> float:
    """The fastest of ``rounds`` calls (after one to warm up) answering ``size`` bytes, ms."""
    best = float("inf")
    for _ in range(rounds + 1):  # the first one warms up
        began = time.perf_counter()
        got = call()
        assert len(got) == size, len(got)
        best = min(best, (time.perf_counter() - began) * 1000)
    return best


def fleet_of(start: Callable[[], Any], kill: Callable[[Any], object], n: int) -> dict[str, Any]:
    """``n`` hosts' plugins started at once (``start`` returns one that has answered a
    call): the wall time and the RSS growth per plugin; then all killed."""
    from concurrent.futures import ThreadPoolExecutor

    before = rss_kb()
    began = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        started = list(pool.map(lambda _: start(), range(n)))
    wall = (time.perf_counter() - began) * 1000
    after = rss_kb()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(kill, started))
    return {"wall_ms": wall, "rss_kb_per_plugin": (after - before) / n}


async def async_p50_us(
    call: Callable[[], Awaitable[object]], n: int, warmup: int
) -> tuple[float, float]:
    """:func:`p50_us` for a coroutine call (the middle sample, as the async drivers took)."""
    for _ in range(warmup):
        await call()
    times = []
    cpu = time.process_time_ns()
    for _ in range(n):
        began = time.perf_counter_ns()
        await call()
        times.append(time.perf_counter_ns() - began)
    times.sort()
    return times[len(times) // 2] / 1000, (time.process_time_ns() - cpu) / n / 1000


async def async_throughput(
    call: Callable[[], Awaitable[object]], parallel: int, per_worker: int
) -> float:
    """Calls per second of ``parallel`` tasks making ``per_worker`` calls each."""
    for _ in range(20):
        await call()

    async def work() -> None:
        for _ in range(per_worker):
            await call()

    began = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(parallel)))
    return parallel * per_worker / (time.perf_counter() - began)


async def async_guarded(coro: Awaitable[float]) -> float | str:
    """The figure ``coro`` returns, or why it failed (at most 300 s)."""
    try:
        return float(await asyncio.wait_for(coro, 300))
    except Exception as exc:
        return reason(exc)


async def async_call_rows(
    health: Callable[[], Awaitable[object]],
    spec: dict[str, Any],
    big: Callable[[], Awaitable[float]],
) -> dict[str, Any]:
    """The call rows of an asyncio driver: unary p50 and CPU per call, ``parallel`` x
    ``per_worker`` calls/s, and the 16 MiB reply (``big``) when the spec asks for it. A
    row that fails says why instead of a figure."""
    try:
        p50, cpu = await async_p50_us(health, spec["unary_calls"], spec["warmup"])
    except Exception as exc:
        p50 = cpu = reason(exc)
    out: dict[str, Any] = {
        "p50_us": p50,
        "cpu_us": cpu,
        "ops_s": await async_guarded(
            async_throughput(health, spec["parallel"], spec["per_worker"])
        ),
    }
    if spec.get("big_bytes"):
        out["big_ms"] = await async_guarded(big())
    return out


def big_request(pb2: ModuleType, size: int) -> Any:
    data = json.dumps({"size": size}).encode()
    return pb2.InvokeServiceRequest(service_name="big", request_data=data)
