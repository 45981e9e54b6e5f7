"""``aog-plugins list DIR`` and ``aog-plugins run DIR`` as a user runs them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from aog_plugins.cli import main
from tests.manager.conftest import Layout
from tests.support.leaks import LeakCheck


def test_list_shows_every_plugin_without_starting_any(
    layout: Layout, leaks: LeakCheck, capsys: pytest.CaptureFixture[str]
) -> None:
    layout.add("alpha", services=[("chat", "chat"), ("embed", "embed")], version="2.1.0")
    layout.add("broken", exe_mode=0o644)
    assert main(["list", str(layout.root), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in doc["plugins"]}
    assert plugins["alpha"]["services"] == ["chat", "embed"]
    assert plugins["alpha"]["version"] == "2.1.0"
    assert plugins["alpha"]["type"] == "local"
    assert plugins["alpha"]["executable"] == str(layout.exe("alpha"))
    assert plugins["alpha"]["error"] is None
    assert plugins["broken"]["error_type"] == "ExecutableNotExecutableError"
    assert "chmod +x" in plugins["broken"]["error"]
    assert main(["list", str(layout.root)]) == 0
    text = capsys.readouterr().out
    assert "alpha" in text
    assert "chat,embed" in text
    assert "broken: ExecutableNotExecutableError" in text
    assert leaks.processes() == []


def test_list_of_a_missing_directory_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", str(tmp_path / "nope")]) == 2  # a usage error
    assert "does not exist" in capsys.readouterr().err


class Lines:
    """The stdout lines of a child process, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def until(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if text in line:
                    self.seen.remove(line)
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {text!r}; saw {self.seen}")
            try:
                self.seen.append(self._queue.get(timeout=left))
            except queue.Empty:
                continue


@contextmanager
def _running(
    layout: Layout, leaks: LeakCheck, stderr: IO[str] | int
) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """``aog-plugins run DIR --eager`` with faulthandler; killed if still running after
    the block, which must then leave no plugin behind."""
    argv = ["-X", "faulthandler", "-m", "aog_plugins", "run", str(layout.root), "--eager"]
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **leaks.env},
    )
    try:
        yield proc, Lines(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert leaks.processes() == []


def _burst(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """``sig`` again and again for 50 ms, while the first one is being handled: a second
    may come right after the first, as from ``timeout``, which signals its child and then
    its own group."""
    deadline = time.monotonic() + 0.05
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(sig)
        time.sleep(0.0002)


@pytest.mark.parametrize(
    ("sig", "repeat"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["SIGINT", "SIGTERM", "SIGTERM-repeated"],
)
def test_run_supervises_prints_events_and_stops_cleanly(
    layout: Layout, leaks: LeakCheck, sig: signal.Signals, repeat: bool
) -> None:
    layout.add("alpha")
    layout.add("beta")
    err_path = layout.root.parent / "run.stderr"
    with err_path.open("w") as err, _running(layout, leaks, err) as (proc, lines):
        try:
            lines.until("started  alpha")
            lines.until("started  beta")
            lines.until("supervising 2 plugin(s)")
            layout.add("gamma")
            lines.until("added    gamma")
            lines.until("started  gamma")  # --eager applies to newcomers too
            proc.send_signal(sig)
            if repeat:
                _burst(proc, sig)
            code = proc.wait(60)
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            proc.wait()
            raise AssertionError(f"{exc}\n{err_path.read_text()}") from None
        assert code == 0, err_path.read_text()
        lines.until("all plugins stopped")


def test_run_stopped_while_eager_starts_ends_at_once_with_0(
    layout: Layout, leaks: LeakCheck
) -> None:
    # One plugin never sends its handshake, so --eager is still starting it when SIGTERM
    # comes: the run used to wait out the start timeout (about 60 s), then exit 130.
    layout.add("ok")
    layout.add("mute", wrapper_lines=["sleep 600"])
    with _running(layout, leaks, subprocess.DEVNULL) as (proc, lines):
        lines.until("started  ok")
        wait_for = time.monotonic() + 30
        while len(leaks.processes()) < 2 and time.monotonic() < wait_for:
            time.sleep(0.05)  # the mute plugin is spawned too
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(45)  # a bound under the start timeout, not a speed requirement
        assert code == 0
        lines.until("all plugins stopped")


HOSTILE = "\x1b]0;PWNED\x07\x1b[2J"  # sets the terminal's title, then clears the screen


def test_list_shows_a_manifests_control_characters_escaped(
    layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    # A plugins directory is not the user's own text: its table once passed a manifest's
    # escapes to the terminal as they were.
    layout.add("alpha", version=f"1.0{HOSTILE}", services=[(f"chat{HOSTILE}", "chat")])
    layout.add("beta", exe_mode=0o644, services=[("chat\nforged: line", "chat")])
    assert main(["list", str(layout.root)]) == 0
    text = capsys.readouterr().out
    assert "1.0\\x1b]0;PWNED\\x07\\x1b[2J" in text
    assert "chat\\x1b]0;PWNED" in text
    assert "\x1b" not in text
    assert "\x07" not in text
    assert not [line for line in text.splitlines() if line.startswith("forged")]


def test_run_shows_a_plugin_names_control_characters_escaped(
    layout: Layout, leaks: LeakCheck
) -> None:
    layout.add("alpha", name=f"alpha{HOSTILE}")
    with _running(layout, leaks, subprocess.DEVNULL) as (proc, lines):
        added = lines.until("added    alpha")
        lines.until("supervising 1 plugin(s)")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert "added    alpha\\x1b]0;PWNED\\x07\\x1b[2J: found at start" in added, added


def test_run_whose_reader_went_away_ends_quietly_at_its_next_event(
    layout: Layout, leaks: LeakCheck
) -> None:
    # The failing write was logged as "the manager's on_event callback failed", traceback
    # hint and all, at every event, and the run went on supervising for nobody.
    layout.add("alpha")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aog_plugins", "run", str(layout.root), "--eager"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **leaks.env},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "supervising 1 plugin(s)" in line:
                break
        proc.stdout.close()  # the reader goes away ('| head -n 3')
        layout.add("beta")  # an event to print
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    assert "callback" not in err
    assert "Traceback" not in err
    assert leaks.processes() == []
