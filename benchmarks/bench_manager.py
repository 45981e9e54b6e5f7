#!/usr/bin/env python3
"""Plugin manager benchmarks on a directory of Go AOG provider plugins.

    python benchmarks/bench_manager.py [--plugins 20] [--rounds 3] [--name NAME]

Measures, on N copies of the Go fixture plugin laid out like AOG's plugins directory:

(a) start-all: ``PluginManager(eager=True)`` wall time (every plugin started in parallel)
    vs starting them one by one with ``get()`` (ours), vs the Go host (go-plugin) starting
    them one by one (one ``go-host -calls GetManifest`` process per plugin: its wall time
    includes the host's own start, one call and the kill, so it is an upper bound);
    target: eager <= 0.5x our sequential time on 2 cores;
(b) host RSS per running plugin (our process's RSS growth / N) and each plugin's own RSS;
(c) how long new calls are delayed while a running plugin is replaced (three threads
    calling ``echo`` back to back; the replacement is a fresh copy of the binary renamed
    over the old one): worst and p99 latency in the replace window vs steady state, and
    failed calls (should be 0);
(d) how soon a plugin directory renamed in is listed, with file events and with polling
    (target: within 2 s);

Each figure is the median of ``--rounds``. Prints a table and writes everything to
``benchmarks/results/<name>.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from aog_plugins import PluginManager  # noqa: E402
from aog_plugins.errors import AogPluginsError  # noqa: E402
from aog_plugins.manager import ManagerEvent  # noqa: E402
from tests.manager.conftest import BIN_DIR, Layout  # noqa: E402
from tests.support.gobuild import GoBinaries, build_go_binaries, cache_root  # noqa: E402


def make_directory(root: Path, bins: GoBinaries, count: int) -> list[str]:
    layout = Layout(root, bins)
    names = [f"go{i:02d}" for i in range(count)]
    for name in names:
        layout.add_go(name)
    return names


def start_all(root: Path) -> tuple[float, float, list[int]]:
    """(eager wall time, host RSS growth in bytes, plugin pids) for one eager manager."""
    me = psutil.Process()
    rss_before = me.memory_info().rss
    started = time.perf_counter()
    manager = PluginManager(root, eager=True, watch=False)
    wall = time.perf_counter() - started
    try:
        entries = manager.entries()
        assert all(e.pid for e in entries), [(e.name, e.state, e.error) for e in entries]
        rss = me.memory_info().rss - rss_before
        pids = [e.pid for e in entries if e.pid]
        plugin_rss = [psutil.Process(p).memory_info().rss for p in pids]
    finally:
        manager.close()
    return wall, rss, plugin_rss


def start_sequential(root: Path, names: list[str]) -> float:
    with PluginManager(root, watch=False) as manager:
        started = time.perf_counter()
        for name in names:
            manager.get(name)
        return time.perf_counter() - started


def go_host_sequential(root: Path, bins: GoBinaries, names: list[str]) -> float:
    started = time.perf_counter()
    for name in names:
        exe = root / name / BIN_DIR / name
        subprocess.run(
            [
                str(bins.go_host),
                "-automtls",
                "-calls",
                "GetManifest",
                "-log-level",
                "error",
                str(exe),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return time.perf_counter() - started


def replace_delay(root: Path, bins: GoBinaries) -> dict[str, Any]:
    """Latency of back-to-back calls around one replacement of a running plugin."""
    target = root / "go00" / BIN_DIR / "go00"
    replaced = threading.Event()

    def on_event(event: ManagerEvent) -> None:
        if event.kind == "stopped" and event.name == "go00" and "replaced" in event.reason:
            replaced.set()

    samples: list[tuple[float, float]] = []  # (start time, latency)
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with PluginManager(root, watch=True, on_event=on_event) as manager:
        client = manager.client("go00")
        client.invoke_service("echo", b"warm")

        def call() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.invoke_service("echo", b"x", timeout=30)
                except AogPluginsError as exc:
                    with lock:
                        failures.append(str(exc))
                    continue
                with lock:
                    samples.append((t0, time.perf_counter() - t0))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        window_start = time.perf_counter()
        tmp = target.with_name(".go00.new")
        shutil.copy2(bins.aog_provider, tmp)
        os.replace(tmp, target)
        replaced.wait(60)
        window_end = time.perf_counter()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
    steady = [lat for t0, lat in samples if t0 < window_start]
    window = [lat for t0, lat in samples if window_start <= t0 <= window_end]
    return {
        "steady_p50_ms": statistics.median(steady) * 1000,
        "steady_max_ms": max(steady) * 1000,
        "window_s": window_end - window_start,
        "window_calls": len(window),
        "window_p99_ms": _pct(window, 0.99) * 1000,
        "window_max_ms": max(window) * 1000 if window else 0.0,
        "failures": len(failures),
    }


def listing_delay(root: Path, bins: GoBinaries, watch: bool | str) -> float:
    """Seconds from a plugin directory renamed into ``root`` to its ``added`` event."""
    seen = threading.Event()

    def on_event(event: ManagerEvent) -> None:
        if event.kind == "added" and event.name == "newcomer":
            seen.set()

    staging = root.parent / "staging"
    staging.mkdir(exist_ok=True)
    Layout(staging, bins).add_go("newcomer")
    with PluginManager(root, watch=watch, on_event=on_event):
        time.sleep(0.5)
        started = time.perf_counter()
        os.rename(staging / "newcomer", root / "newcomer")
        seen.wait(30)
        delay = time.perf_counter() - started
    shutil.rmtree(root / "newcomer")
    return delay


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plugins", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="bench_manager")
    args = parser.parse_args()
    bins = build_go_binaries(cache_root())
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aogp-bench-") as tmp:
        root = Path(tmp) / "plugins"
        root.mkdir()
        names = make_directory(root, bins, args.plugins)
        for _ in range(args.rounds):
            eager, rss, plugin_rss = start_all(root)
            rounds.append(
                {
                    "eager_s": eager,
                    "sequential_s": start_sequential(root, names),
                    "go_sequential_s": go_host_sequential(root, bins, names),
                    "host_rss_per_plugin_kib": rss / len(names) / 1024,
                    "plugin_rss_kib": statistics.median(plugin_rss) / 1024,
                    **{f"replace_{k}": v for k, v in replace_delay(root, bins).items()},
                    "listed_events_s": listing_delay(root, bins, True),
                    "listed_poll_s": listing_delay(root, bins, "poll"),
                }
            )
    summary = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    summary["eager_over_sequential"] = summary["eager_s"] / summary["sequential_s"]
    rows = [
        (f"start {args.plugins} plugins, eager=True (parallel)", f"{summary['eager_s']:.2f} s"),
        ("start them one by one, get() (ours)", f"{summary['sequential_s']:.2f} s"),
        ("start them one by one, Go host (process wall)", f"{summary['go_sequential_s']:.2f} s"),
        ("eager / one by one (target <= 0.5)", f"{summary['eager_over_sequential']:.2f}"),
        ("host RSS per running plugin", f"{summary['host_rss_per_plugin_kib']:.0f} KiB"),
        ("plugin RSS (median)", f"{summary['plugin_rss_kib']:.0f} KiB"),
        (
            "call latency steady p50 / max",
            f"{summary['replace_steady_p50_ms']:.1f} / {summary['replace_steady_max_ms']:.1f} ms",
        ),
        ("replace window (write -> old stopped)", f"{summary['replace_window_s']:.2f} s"),
        (
            "call latency during replace p99 / max",
            f"{summary['replace_window_p99_ms']:.1f} / {summary['replace_window_max_ms']:.1f} ms",
        ),
        ("failed calls during replace", f"{summary['replace_failures']:.0f}"),
        (
            "new plugin listed after (events / polling)",
            f"{summary['listed_events_s']:.2f} / {summary['listed_poll_s']:.2f} s",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(
        f"bench_manager on {os.cpu_count()} cores ({platform.machine()}), median of {args.rounds}"
    )
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    out = REPO / "benchmarks" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "plugins": args.plugins,
                "cores": os.cpu_count(),
                "summary": summary,
                "rounds": rounds,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
