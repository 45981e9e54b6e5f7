"""Item 7 of issue 9: output a plugin sends over GRPCStdio is bounded on the host."""

from __future__ import annotations

import logging
import threading

import psutil
import pytest

from aog_plugins import launch
from tests.process.conftest import LeakCheck, plugin_cmd

BURST = 200 * 1024 * 1024
BOUND = 150 * 1024 * 1024  # the unbounded host grew by more than 1 GiB for this burst


class _PeakRSS:
    """Samples this process's RSS on a thread and keeps the highest value seen."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return self.peak - self.start


@pytest.mark.timeout(300)
def test_one_huge_stdio_write_is_dropped_with_bounded_memory(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    received = bytearray()
    done = threading.Event()
    largest = [0]

    def on_stdout(data: bytes) -> None:
        largest[0] = max(largest[0], len(data))
        received.extend(data[-64:])
        del received[:-64]
        if b"burst-done" in received:
            done.set()

    env = {**leak_check.env, "AOG_FIXTURE_BYTES": str(BURST)}
    caplog.set_level(logging.DEBUG, logger="aog_plugins.plugin")
    rss = _PeakRSS()
    try:
        with launch(plugin_cmd("misbehave.py", "burst"), stdout=on_stdout, extra_env=env) as plugin:
            assert done.wait(120), "the output after the burst arrives"
            plugin.ping()
            pump = plugin._current.stdio
    finally:
        growth = rss.stop()
    print(f"host RSS growth during a {BURST >> 20} MiB stdio burst: {growth / 2**20:.1f} MiB")
    assert growth < BOUND, f"host RSS grew by {growth / 2**20:.0f} MiB"
    assert largest[0] <= 64 * 1024, "handlers get bounded chunks"
    assert pump is not None
    dropped = (pump.dropped, pump.dropped_messages)
    assert dropped[1] == 1
    assert dropped[0] >= BURST
    warnings = [r for r in caplog.records if "dropped a message" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert f"of {dropped[0]} bytes" in warnings[0].getMessage()


def test_a_stdio_callback_that_raises_does_not_stop_the_output(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    # A raising stdout= callback ended the stdio reader for good: nothing the plugin wrote
    # later arrived, and a Go plugin blocks once ~64 KiB of its output are left unread.
    calls: list[int] = []
    done = threading.Event()

    def on_stdout(data: bytes) -> None:
        calls.append(len(data))
        if len(calls) == 1:
            raise RuntimeError("a bug in the user's callback")
        if b"burst-done" in data:
            done.set()

    env = {**leak_check.env, "AOG_FIXTURE_BYTES": "1000"}
    with launch(plugin_cmd("misbehave.py", "burst"), stdout=on_stdout, extra_env=env):
        assert done.wait(60), "the output after the failing call arrives"
    assert "a bug in the user's callback" in caplog.text
