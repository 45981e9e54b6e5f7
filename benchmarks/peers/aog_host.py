"""Driver: aog-plugins as the host (the checkout on PYTHONPATH). See _common.py."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import _common as c

began_import = time.perf_counter()
from aog_plugins import RestartPolicy, launch  # noqa: E402

IMPORT_MS = (time.perf_counter() - began_import) * 1000
QUIET = logging.getLogger("bench.plugin")
QUIET.setLevel(logging.ERROR)


def start(spec: dict[str, Any]) -> Any:
    return launch(
        spec["plugin"],
        auto_mtls=spec["tls"],
        extra_env=spec.get("env") or {},
        restart=RestartPolicy.never(),
        logger=QUIET,
        install_signal_handlers=False,
    )


def cold(spec: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    plugin = start(spec)
    plugin.client.health_check(timeout=30)
    first = (time.perf_counter() - began) * 1000
    plugin.kill()
    return {"first_call_ms": first, "import_ms": IMPORT_MS}


def calls(spec: dict[str, Any]) -> dict[str, Any]:
    plugin = start(spec)
    client = plugin.client
    try:

        def health() -> None:
            client.health_check(timeout=30)

        try:
            p50, cpu = c.p50_us(health, spec["unary_calls"], spec["warmup"])
        except Exception as exc:
            p50 = cpu = c.reason(exc)
        out: dict[str, Any] = {
            "p50_us": p50,
            "cpu_us": cpu,
            "ops_s": c.guarded(
                lambda: c.thread_throughput(health, spec["parallel"], spec["per_worker"])
            ),
        }
        if spec.get("big_bytes"):
            data = json.dumps({"size": spec["big_bytes"]}).encode()

            def big() -> float:
                def call() -> bytes:
                    return client.invoke_service("big", data, timeout=120)

                return c.best_ms(call, spec["big_bytes"], spec["big_rounds"])

            out["big_ms"] = c.guarded(big)
        return out
    finally:
        plugin.kill()


def fleet(spec: dict[str, Any]) -> dict[str, Any]:
    def one() -> Any:
        plugin = start(spec)
        plugin.client.health_check(timeout=60)
        return plugin

    return c.fleet_of(one, lambda plugin: plugin.kill(), spec["fleet"])


if __name__ == "__main__":
    s = c.spec_from_argv()
    c.emit({"start": cold, "calls": calls, "fleet": fleet}[s["mode"]](s))
