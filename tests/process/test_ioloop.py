"""The I/O loop and its lanes: callbacks off the loop thread, in order, with flow control."""

from __future__ import annotations

import os
import select
import threading
from functools import partial

from aog_plugins.process._ioloop import IOLoop
from aog_plugins.process._lane import Lane


def test_a_lane_runs_in_order_survives_errors_and_drains() -> None:
    lane = Lane("test-lane", linger=0.05)
    seen: list[int] = []
    threads: set[threading.Thread] = set()

    def step(n: int) -> None:
        threads.add(threading.current_thread())
        if n == 3:
            raise ValueError("a failing callback is logged; the lane goes on")
        seen.append(n)

    for n in range(200):
        lane.submit(partial(step, n))
    assert lane.drain(30)
    assert seen == [n for n in range(200) if n != 3]
    assert threading.current_thread() not in threads


def test_a_slow_reader_callback_stops_reading_its_pipe_then_resumes_in_order() -> None:
    loop = IOLoop()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    release = threading.Event()
    got = bytearray()
    eof = threading.Event()

    def on_data(chunk: bytes) -> None:
        release.wait(60)
        got.extend(chunk)
        if not chunk:
            eof.set()

    loop.add_reader(read_fd, on_data)
    sent = bytearray()
    block = bytes(range(256)) * 256  # 64 KiB, recognisable
    try:
        # Write until the pipe has stayed full for a while: the loop stopped reading.
        while len(sent) < 16 * 1024 * 1024:
            _, writable, _ = select.select([], [write_fd], [], 1.0)
            if not writable:
                break
            try:
                n = os.write(write_fd, block)
            except BlockingIOError:
                continue
            sent += block[:n]
        assert len(sent) < 2 * 1024 * 1024, f"{len(sent)} bytes read ahead of a blocked callback"
    finally:
        release.set()
    os.set_blocking(write_fd, True)
    os.write(write_fd, b"the end")
    os.close(write_fd)
    assert eof.wait(30)
    assert bytes(got) == bytes(sent) + b"the end"
