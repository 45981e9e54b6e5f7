#!/usr/bin/env python3
"""asyncio benchmarks: aog_plugins.aio vs the sync client on a thread pool vs the Go host.

    python benchmarks/bench_aio.py [--quick] [--name NAME]

On the same Go plugin binary (the AOG provider fixture), plaintext and AutoMTLS (P-521:
our hosts go through the relay), in one run:

(a) 1,000 concurrent unary InvokeService calls: ``asyncio.gather`` on one
    AsyncGRPCProviderClient; the sync GRPCProviderClient on a ThreadPoolExecutor
    (``--threads``, default 64); go-plugin's Go host (fixtures/hosts/go ``-bench
    unary:1000 -parallel 1000``). Wall time of the batch -> calls/s.
(b) 32 concurrent InvokeServiceStream calls of ``--chunks`` chunks each, the same three ways.
(c) the longest event-loop stall while a plugin starts, crashes and restarts, and is
    killed through aog_plugins.aio: a ticker task sleeps 1 ms at a time and records how
    late each wake-up is; the same ticker on an idle loop gives the machine's own noise.

Batches run round-robin over all rows and the best of ``--repeats`` counts, so load from
other processes on a shared machine hits every row alike. Prints a table and writes
``benchmarks/results/<name>.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_calls import SMALL, environment  # noqa: E402

from aog_plugins import (  # noqa: E402
    GRPCProviderClient,
    Plugin,
    RestartPolicy,
    aio,
    launch,
)
from tests.support.gobuild import GoBinaries, build_go_binaries, cache_root  # noqa: E402

QUIET = logging.getLogger("bench.plugin")
QUIET.setLevel(logging.ERROR)


@dataclass(frozen=True)
class Settings:
    unary: int
    streams: int
    chunks: int
    threads: int
    repeats: int
    stall_rounds: int


@dataclass
class Row:
    """One host x TLS setting: best batch wall times."""

    host: str
    tls: bool
    unary_s: float = float("inf")
    streams_s: float = float("inf")

    @property
    def key(self) -> str:
        return f"{self.host}/{'automtls' if self.tls else 'plaintext'}"


class Ticker:
    """Sleeps 1 ms at a time and keeps the latest wake-up: how long the loop was stalled."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, loop.time() - due)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.worst * 1000


async def measured(ticker: Ticker, step: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """Run ``step`` with the ticker on; returns its result and the worst stall in ms."""
    ticker.start()
    result = await step()
    return result, await ticker.stop()


class AioRow:
    def __init__(self, plugin: aio.AsyncPlugin, row: Row) -> None:
        self.plugin, self.row = plugin, row

    async def unary(self, n: int) -> float:
        client = self.plugin.client
        data = SMALL.encode()
        begun = time.perf_counter()
        await asyncio.gather(*(client.invoke_service("echo", data, timeout=120) for _ in range(n)))
        return time.perf_counter() - begun

    async def streams(self, n: int, body: bytes) -> float:
        client = self.plugin.client

        async def one() -> int:
            return len(
                [c async for c in await client.invoke_service_stream("echo", body, timeout=300)]
            )

        begun = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - begun


class PoolRow:
    def __init__(self, plugin: Plugin, row: Row, threads: int) -> None:
        self.plugin, self.row = plugin, row
        self.pool = ThreadPoolExecutor(max_workers=threads)

    def unary(self, n: int) -> float:
        client: GRPCProviderClient = self.plugin.client
        data = SMALL.encode()
        begun = time.perf_counter()
        list(self.pool.map(lambda _: client.invoke_service("echo", data, timeout=120), range(n)))
        return time.perf_counter() - begun

    def streams(self, n: int, body: bytes) -> float:
        client = self.plugin.client
        begun = time.perf_counter()
        list(
            self.pool.map(
                lambda _: len(list(client.invoke_service_stream("echo", body, timeout=300))),
                range(n),
            )
        )
        return time.perf_counter() - begun


def go_bench(bins: GoBinaries, tls: bool, bench: str, data: str, parallel: int) -> float:
    """One go-host -bench run with ``parallel`` goroutines; the timed part's wall seconds."""
    argv = [str(bins.go_host), "-bench", bench, "-bench-service", "echo", "-bench-data", data]
    argv += ["-parallel", str(parallel), "-bench-warmup", "20", "-call-timeout", "300s"]
    argv += ["-log-level", "error", *(["-automtls"] if tls else []), "--", str(bins.aog_provider)]
    env = {**os.environ, "AOG_FIXTURE_LOG_LEVEL": "info"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
    for line in done.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "bench":
            if event["errors"]:
                raise RuntimeError(f"go-host bench errors: {event.get('first_error')}")
            return float(event["total_ns"]) / 1e9
    raise RuntimeError(f"go-host gave no bench result:\n{done.stdout}\n{done.stderr}")


async def stalls(bins: GoBinaries, rounds: int) -> dict[str, dict[str, float]]:
    """Worst loop stall (ms) per phase, Go plugin with AutoMTLS (relay): the first round
    (cold: first grpc.aio channel of the process, first relay) apart, then the median and
    the maximum of ``rounds`` warm rounds."""
    ticker = Ticker()
    phases = ("idle", "start", "crash+restart", "kill")
    seen: dict[str, list[float]] = {phase: [] for phase in phases}
    cold: dict[str, float] = {}
    quick = RestartPolicy(backoff_base=0.05, jitter=0.0, min_uptime=0.0)
    for round_ in range(rounds + 1):
        _, idle = await measured(ticker, lambda: asyncio.sleep(0.5))
        plugin, start = await measured(
            ticker,
            lambda: aio.launch(str(bins.aog_provider), auto_mtls=True, restart=quick, logger=QUIET),
        )
        os.kill(plugin.pid, signal.SIGKILL)
        _, crash = await measured(ticker, partial(plugin.client.get_manifest, timeout=60))
        _, kill = await measured(ticker, plugin.kill)
        for phase, ms in zip(phases, (idle, start, crash, kill), strict=True):
            if round_ == 0:
                cold[phase] = round(ms, 2)
            else:
                seen[phase].append(ms)
    return {
        "cold (first round)": cold,
        "median": {phase: round(statistics.median(v), 2) for phase, v in seen.items()},
        "max": {phase: round(max(v), 2) for phase, v in seen.items()},
    }


async def aio_main(s: Settings, bins: GoBinaries, body: bytes) -> dict[str, Any]:
    """Everything that needs the loop: the aio rows (plugins started once), the sync pool
    rows and Go host batches interleaved with them, then the stall measurements."""
    rows: dict[str, Row] = {}
    aio_rows: list[AioRow] = []
    pool_rows: list[PoolRow] = []
    binary = str(bins.aog_provider)
    never = RestartPolicy.never()
    try:
        for tls in (False, True):
            plugin = await aio.launch(binary, auto_mtls=tls, restart=never, logger=QUIET)
            aio_rows.append(AioRow(plugin, rows.setdefault(f"aio/{tls}", Row("aio", tls))))
            sync = await asyncio.to_thread(
                launch, binary, auto_mtls=tls, restart=never, logger=QUIET
            )
            row = rows.setdefault(f"pool/{tls}", Row(f"sync+{s.threads} threads", tls))
            pool_rows.append(PoolRow(sync, row, s.threads))
            rows.setdefault(f"go/{tls}", Row("go-host", tls))
        for r in aio_rows:  # warm-up: channels connected, code paths hot
            await r.unary(50)
        for p in pool_rows:
            await asyncio.to_thread(p.unary, 50)
        for repeat in range(s.repeats):
            print(f"round {repeat + 1}/{s.repeats}", file=sys.stderr, flush=True)
            for a, p in zip(aio_rows, pool_rows, strict=True):
                tls = a.row.tls
                a.row.unary_s = min(a.row.unary_s, await a.unary(s.unary))
                p.row.unary_s = min(p.row.unary_s, await asyncio.to_thread(p.unary, s.unary))
                go = rows[f"go/{tls}"]
                go.unary_s = min(
                    go.unary_s,
                    await asyncio.to_thread(
                        go_bench, bins, tls, f"unary:{s.unary}", SMALL, s.unary
                    ),
                )
                a.row.streams_s = min(a.row.streams_s, await a.streams(s.streams, body))
                p.row.streams_s = min(
                    p.row.streams_s, await asyncio.to_thread(p.streams, s.streams, body)
                )
                go.streams_s = min(
                    go.streams_s,
                    await asyncio.to_thread(
                        go_bench, bins, tls, f"stream:{s.streams}", body.decode(), s.streams
                    ),
                )
    finally:
        for a in aio_rows:
            await a.plugin.kill()
        for p in pool_rows:
            p.pool.shutdown()
            await asyncio.to_thread(p.plugin.kill)
    print("loop stalls ...", file=sys.stderr, flush=True)
    return {"rows": list(rows.values()), "stalls_ms": await stalls(bins, s.stall_rounds)}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--name", default=time.strftime("aio-%Y%m%d-%H%M%S"))
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=200)
    args = parser.parse_args(argv)
    s = Settings(
        unary=1000,
        streams=32,
        chunks=args.chunks,
        threads=args.threads,
        repeats=1 if args.quick else 3,
        stall_rounds=2 if args.quick else 7,
    )
    info = environment()
    bins = build_go_binaries(cache_root())
    body = json.dumps({"chunks": s.chunks}).encode()
    found = asyncio.run(aio_main(s, bins, body))
    rows: list[Row] = found["rows"]
    stalls_ms: dict[str, dict[str, float]] = found["stalls_ms"]
    by = {r.key: r for r in rows}
    ratios: dict[str, float] = {}
    for tls in ("plaintext", "automtls"):
        a, p, g = by[f"aio/{tls}"], by[f"sync+{s.threads} threads/{tls}"], by[f"go-host/{tls}"]
        ratios[f"unary throughput aio/sync-pool, {tls}"] = ratio(p.unary_s, a.unary_s)
        ratios[f"unary throughput aio/go-host, {tls}"] = ratio(g.unary_s, a.unary_s)
        ratios[f"stream throughput aio/sync-pool, {tls}"] = ratio(p.streams_s, a.streams_s)
        ratios[f"stream throughput aio/go-host, {tls}"] = ratio(g.streams_s, a.streams_s)
    print(f"{'host':<22}{'tls':<11}{'1000 unary s':>13}{'calls/s':>9}{'32 streams s':>14}")
    for r in rows:
        tls = "automtls" if r.tls else "plaintext"
        line = f"{r.host:<22}{tls:<11}{r.unary_s:>13.3f}{s.unary / r.unary_s:>9.0f}"
        print(line + f"{r.streams_s:>14.3f}")
    print(f"\n(32 streams x {s.chunks} chunks; ratios > 1: aio is faster)")
    for name, value in ratios.items():
        print(f"{name:<50}{value:>7.2f}")
    print("\nlongest event-loop stall, ms (Go plugin, AutoMTLS relay; idle = machine noise)")
    phases = list(stalls_ms["median"])
    print(f"  {'':<20}" + "".join(f"{phase:>15}" for phase in phases))
    for kind, values in stalls_ms.items():
        print(f"  {kind:<20}" + "".join(f"{values[phase]:>15.2f}" for phase in phases))
    info["loadavg_after"] = os.getloadavg()
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.json"
    document = {
        "settings": asdict(s),
        "environment": info,
        "rows": [{**asdict(r), "key": r.key} for r in rows],
        "ratios": ratios,
        "loop_stall_ms": stalls_ms,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
