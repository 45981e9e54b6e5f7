#!/usr/bin/env python3
"""Call benchmarks: our Python host vs go-plugin's Go host, and what the TLS relay costs.

    python benchmarks/bench_calls.py [--quick] [--name NAME]

Measures, in one run and on the same plugin binaries:

(a) unary InvokeService latency, Python host vs Go host (fixtures/hosts/go ``-bench``), on
    the Go AOG provider fixture, plaintext and AutoMTLS;
(b) a 64 MiB transfer (InvokeServiceStream ``big``: one 64 MiB chunk, then the final one)
    on the same pairs;
(c) the relay's cost: AutoMTLS / plaintext for the Python host on the Go plugin (P-521:
    host-side relay) and for the Go host on a Python plugin (P-521 client cert: plugin-side
    relay), next to the Go host on the Go plugin (Go's own TLS) and the Python host on the
    Python echo plugin (grpcio's own TLS, P-256) for reference.

Each figure is the best of several batches, taken round-robin over all rows so that load
from other processes on a shared machine hits every row alike. Prints a table and writes
everything to ``benchmarks/results/<name>.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from aog_plugins import RestartPolicy, launch  # noqa: E402
from tests.support.gobuild import GoBinaries, build_go_binaries, cache_root  # noqa: E402

MIB = 1024 * 1024
CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
SMALL = json.dumps({"hello": "world"})


@dataclass(frozen=True)
class Workload:
    """One plugin and the two calls timed on it."""

    plugin: str  # label
    argv: tuple[str, ...]
    env: dict[str, str]
    unary_service: str
    unary_data: str
    big_kind: str  # "stream" or "unary"
    big_service: str
    big_data: str


@dataclass
class Row:
    """Results for one host x workload x TLS setting."""

    host: str
    plugin: str
    tls: bool
    unary_us: float = 0.0  # best batch, microseconds per call
    unary_us_median: float = 0.0
    big_s: float = 0.0  # best transfer, seconds (after one warm-up transfer)
    big_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.host}->{self.plugin}/{'automtls' if self.tls else 'plaintext'}"

    @property
    def big_mib_s(self) -> float:
        return self.big_bytes / MIB / self.big_s if self.big_s else 0.0


@dataclass(frozen=True)
class Settings:
    unary_calls: int
    warmup: int
    repeats: int
    big_bytes: int
    big_rounds: int


def workloads(bins: GoBinaries, big: int) -> dict[str, Workload]:
    big_data = json.dumps({"size": big})
    python = sys.executable
    fixtures = REPO / "fixtures" / "plugins"
    return {
        "go-provider": Workload(
            "go-provider",
            (str(bins.aog_provider),),
            {"AOG_FIXTURE_LOG_LEVEL": "info"},
            "echo",
            SMALL,
            "stream",
            "big",
            big_data,
        ),
        "py-remote": Workload(
            "py-remote",
            (python, str(fixtures / "remote_provider.py")),
            {},
            "chat",
            CHAT,
            "stream",
            "big",
            big_data,
        ),
        "py-echo": Workload(
            "py-echo",
            (python, str(fixtures / "echo_plugin.py")),
            {},
            "chat",
            SMALL,
            "unary",
            "chat",
            big_data,
        ),
    }


def go_host(
    bins: GoBinaries, work: Workload, *, tls: bool, bench: str, service: str, data: str, warmup: int
) -> dict[str, Any]:
    """One go-host -bench run; returns its {"event":"bench"} line."""
    argv = [str(bins.go_host), "-bench", bench, "-bench-service", service, "-bench-data", data]
    argv += ["-bench-warmup", str(warmup), "-call-timeout", "300s", "-log-level", "error"]
    if tls:
        argv.append("-automtls")
    env = {**os.environ, **work.env}
    done = subprocess.run(
        [*argv, "--", *work.argv], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    for line in done.stdout.splitlines():
        event = json.loads(line)
        if event.get("event") == "bench":
            if event["errors"]:
                raise RuntimeError(f"go-host bench errors: {event.get('first_error')}")
            return dict(event)
    raise RuntimeError(f"go-host gave no bench result:\n{done.stdout}\n{done.stderr}")


class GoHostRunner:
    """Batches through go-host: each batch is one go-host run (its own plugin process)."""

    def __init__(self, bins: GoBinaries, work: Workload, tls: bool, s: Settings) -> None:
        self.row = Row("go-host", work.plugin, tls)
        self._bins, self._work, self._tls, self._s = bins, work, tls, s

    def unary_batch(self) -> float:
        w = self._work
        result = go_host(
            self._bins,
            w,
            tls=self._tls,
            bench=f"unary:{self._s.unary_calls}",
            service=w.unary_service,
            data=w.unary_data,
            warmup=self._s.warmup,
        )
        return float(result["ns_per_op"]) / 1000

    def transfer(self) -> tuple[float, int]:
        w = self._work
        result = go_host(
            self._bins,
            w,
            tls=self._tls,
            bench=f"{w.big_kind}:1",
            service=w.big_service,
            data=w.big_data,
            warmup=1,
        )
        return float(result["ns_per_op"]) / 1e9, int(result["payload_bytes"])

    def close(self) -> None:
        pass


class PythonHostRunner:
    """Batches through our host on one launched plugin (warmed up once)."""

    def __init__(self, work: Workload, tls: bool, s: Settings) -> None:
        self.row = Row("py-host", work.plugin, tls)
        self._work, self._s = work, s
        quiet = logging.getLogger("bench.plugin")
        quiet.setLevel(logging.ERROR)
        self._plugin = launch(
            list(work.argv),
            auto_mtls=tls,
            extra_env=work.env,
            restart=RestartPolicy.never(),
            logger=quiet,
        )
        self._client = self._plugin.client
        for _ in range(s.warmup):
            self._call()
        self._transfer()

    def _call(self) -> int:
        w = self._work
        return len(self._client.invoke_service(w.unary_service, w.unary_data.encode(), timeout=60))

    def _transfer(self) -> int:
        w = self._work
        big = w.big_data.encode()
        if w.big_kind == "unary":
            return len(self._client.invoke_service(w.big_service, big, timeout=300))
        stream = self._client.invoke_service_stream(w.big_service, big, timeout=300)
        return sum(len(chunk.data) for chunk in stream)

    def unary_batch(self) -> float:
        begun = time.perf_counter_ns()
        for _ in range(self._s.unary_calls):
            self._call()
        return (time.perf_counter_ns() - begun) / self._s.unary_calls / 1000

    def transfer(self) -> tuple[float, int]:
        begun = time.perf_counter()
        size = self._transfer()
        return time.perf_counter() - begun, size

    def close(self) -> None:
        self._plugin.kill()


Runner = GoHostRunner | PythonHostRunner


def run_interleaved(runners: list[Runner], s: Settings) -> None:
    """Batch by batch across all rows, so load drift on a shared machine hits every row."""
    unary: dict[int, list[float]] = {i: [] for i in range(len(runners))}
    big: dict[int, list[float]] = {i: [] for i in range(len(runners))}
    for repeat in range(s.repeats):
        print(f"unary round {repeat + 1}/{s.repeats}", file=sys.stderr, flush=True)
        for i, runner in enumerate(runners):
            unary[i].append(runner.unary_batch())
    for round_ in range(s.big_rounds):
        print(f"transfer round {round_ + 1}/{s.big_rounds}", file=sys.stderr, flush=True)
        for i, runner in enumerate(runners):
            seconds, size = runner.transfer()
            big[i].append(seconds)
            runner.row.big_bytes = size
    for i, runner in enumerate(runners):
        row = runner.row
        row.unary_us, row.unary_us_median = min(unary[i]), statistics.median(unary[i])
        row.big_s = min(big[i])


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def ratios(rows: dict[str, Row]) -> dict[str, float]:
    """The comparisons the docs quote, by name."""
    out: dict[str, float] = {}

    def pair(name: str, num: str, den: str, value: Callable[[Row], float]) -> None:
        if num in rows and den in rows:
            out[name] = ratio(value(rows[num]), value(rows[den]))

    def unary(r: Row) -> float:
        return r.unary_us

    def big(r: Row) -> float:
        return r.big_s

    for tls in ("plaintext", "automtls"):
        py, go = f"py-host->go-provider/{tls}", f"go-host->go-provider/{tls}"
        pair(f"(a) unary py/go host, go plugin, {tls}", py, go, unary)
        pair(f"(b) 64MiB py/go host, go plugin, {tls}", py, go, big)
    for host, plugin, what in (
        ("py-host", "go-provider", "host-side relay (py host, go plugin)"),
        ("go-host", "py-remote", "plugin-side relay (go host, py plugin)"),
        ("go-host", "go-provider", "Go's own TLS (reference)"),
        ("py-host", "py-echo", "grpcio's own TLS (reference)"),
    ):
        tls_key, plain_key = f"{host}->{plugin}/automtls", f"{host}->{plugin}/plaintext"
        pair(f"(c) unary automtls/plaintext, {what}", tls_key, plain_key, unary)
        pair(f"(c) 64MiB automtls/plaintext, {what}", tls_key, plain_key, big)
    return out


def print_table(rows: list[Row], found: dict[str, float]) -> None:
    head = f"{'host -> plugin':<28}{'tls':<10}{'unary us/op':>12}{'median':>9}"
    print(head + f"{'64MiB s':>10}{'MiB/s':>9}")
    for r in rows:
        tls = "automtls" if r.tls else "plaintext"
        pair = f"{r.host} -> {r.plugin}"
        line = f"{pair:<28}{tls:<10}{r.unary_us:>12.1f}{r.unary_us_median:>9.1f}"
        print(line + f"{r.big_s:>10.3f}{r.big_mib_s:>9.0f}")
    print()
    for name, value in found.items():
        print(f"{name:<70}{value:>7.2f}")


def environment() -> dict[str, Any]:
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "go": go.stdout.strip(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--name", default=time.strftime("calls-%Y%m%d-%H%M%S"))
    parser.add_argument("--big-mib", type=int, default=64)
    args = parser.parse_args(argv)
    s = (
        Settings(unary_calls=200, warmup=50, repeats=2, big_bytes=args.big_mib * MIB, big_rounds=1)
        if args.quick
        else Settings(
            unary_calls=2000, warmup=200, repeats=5, big_bytes=args.big_mib * MIB, big_rounds=3
        )
    )
    info = environment()
    bins = build_go_binaries(cache_root())
    work = workloads(bins, s.big_bytes)
    plan: list[tuple[str, Workload]] = [
        ("go-host", work["go-provider"]),
        ("py-host", work["go-provider"]),
        ("go-host", work["py-remote"]),
        ("py-host", work["py-echo"]),
    ]
    runners: list[Runner] = []
    try:
        for host, load in plan:
            for tls in (False, True):
                label = f"{host} -> {load.plugin} ({'automtls' if tls else 'plaintext'})"
                print(f"starting {label} ...", file=sys.stderr, flush=True)
                if host == "go-host":
                    runners.append(GoHostRunner(bins, load, tls, s))
                else:
                    runners.append(PythonHostRunner(load, tls, s))
        run_interleaved(runners, s)
    finally:
        for runner in runners:
            runner.close()
    rows = [runner.row for runner in runners]
    found = ratios({r.key: r for r in rows})
    print_table(rows, found)
    info["loadavg_after"] = os.getloadavg()
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.json"
    document = {
        "settings": asdict(s),
        "environment": info,
        "rows": [{**asdict(r), "key": r.key, "big_mib_s": r.big_mib_s} for r in rows],
        "ratios": found,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
