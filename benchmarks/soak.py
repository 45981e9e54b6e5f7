"""Soak: many start/kill cycles and calls with random plugin kills; the host must not grow.

Not a test. Prints the host's child processes, fds, threads and RSS before and after,
and the exit-detection latency seen through lifecycle events; writes JSON to
``benchmarks/results/soak-<plugin>.json``.

    python benchmarks/soak.py --cycles 1000 --calls 2000 --plugin go
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aog_plugins import PluginEvent, PluginState, RestartPolicy, launch  # noqa: E402
from aog_plugins.errors import PluginCallError  # noqa: E402


def _command(kind: str) -> list[str]:
    if kind == "python":
        return [sys.executable, str(ROOT / "fixtures" / "plugins" / "echo_plugin.py")]
    from tests.support.gobuild import go_binaries

    return [str(go_binaries().aog_provider)]


def _snapshot() -> dict[str, Any]:
    gc.collect()
    me = psutil.Process()
    children = [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    return {
        "children": len(children),
        "fds": me.num_fds(),
        "threads": threading.active_count(),
        "rss_mib": round(me.memory_info().rss / 2**20, 2),
    }


def _cycles(cmd: list[str], count: int, auto_mtls_every: int) -> list[float]:
    starts = []
    for i in range(count):
        began = time.perf_counter()
        with launch(cmd, auto_mtls=auto_mtls_every > 0 and i % auto_mtls_every == 0) as plugin:
            starts.append(time.perf_counter() - began)
            plugin.client.health_check(timeout=10)
    return starts


def _calls_with_kills(cmd: list[str], calls: int, kill_every: int) -> dict[str, Any]:
    detections: list[float] = []
    killed_at: list[float] = []

    def on_event(event: PluginEvent) -> None:
        if event.old is PluginState.RUNNING and event.new is PluginState.BACKOFF and killed_at:
            detections.append(time.monotonic() - killed_at[-1])

    policy = RestartPolicy(backoff_base=0.01, backoff_max=0.1, max_restarts=10**6, min_uptime=3600)
    ok = crashed = 0
    failures: dict[str, int] = {}
    with launch(cmd, restart=policy, on_event=on_event) as plugin:
        client = plugin.client
        for i in range(calls):
            if kill_every and i % kill_every == kill_every - 1:
                killed_at.append(time.monotonic())
                os.kill(plugin.pid, signal.SIGKILL)
            try:
                client.invoke_service("echo", b'{"n": 1}', timeout=10)
                ok += 1
            except PluginCallError as exc:
                crashed += 1
                kind = f"{type(exc).__name__}:{exc.code}"
                failures[kind] = failures.get(kind, 0) + 1
    return {
        "calls_ok": ok,
        "calls_failed": crashed,
        "kills": len(killed_at),
        "failures_by_kind": failures,
        "exit_detection_ms_median": round(statistics.median(detections) * 1000, 2)
        if detections
        else None,
        "exit_detection_ms_max": round(max(detections) * 1000, 2) if detections else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plugin", choices=["python", "go"], default="go")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--kill-every", type=int, default=100)
    parser.add_argument("--automtls-every", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # lifecycle warnings are expected here
    cmd = _command(args.plugin)
    # Warm up once so lazily started threads (I/O loop, relay loop) count in "before".
    with launch(cmd, auto_mtls=True) as plugin:
        plugin.ping()
    before = _snapshot()
    began = time.perf_counter()
    starts = _cycles(cmd, args.cycles, args.automtls_every)
    calls = _calls_with_kills(cmd, args.calls, args.kill_every)
    elapsed = time.perf_counter() - began
    time.sleep(0.5)  # let exit callbacks and release threads finish
    after = _snapshot()
    result = {
        "plugin": args.plugin,
        "cycles": args.cycles,
        "start_ms_median": round(statistics.median(starts) * 1000, 2),
        "start_ms_p99": round(sorted(starts)[int(len(starts) * 0.99) - 1] * 1000, 2),
        **calls,
        "seconds": round(elapsed, 1),
        "before": before,
        "after": after,
        "rss_growth_mib": round(after["rss_mib"] - before["rss_mib"], 2),
    }
    print(f"{'':14}{'before':>10}{'after':>10}")
    for key in ("children", "fds", "threads", "rss_mib"):
        print(f"{key:14}{before[key]:>10}{after[key]:>10}")
    for key, value in result.items():
        if key not in ("before", "after"):
            print(f"{key:28} {value}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"soak-{args.plugin}.json").write_text(json.dumps(result, indent=2) + "\n")
    leaked = any(after[k] != before[k] for k in ("children", "fds", "threads"))
    return 1 if leaked or result["rss_growth_mib"] >= 10 else 0


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
