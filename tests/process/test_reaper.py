"""The reaper (its shell stage, the ``_reaper_main`` program) and its host side, driven
directly.

The reaper is run exactly as the host runs it (``reaper_argv``: the shell stage that execs
``python -I -S <file>``), and the program also alone (as it runs without a shell), fed
commands on its stdin, and judged by which real process groups survive its EOF.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from aog_plugins.process import _reaper
from aog_plugins.process._reaper_main import apply_line
from tests.faults.conftest import gone, wait_gone

if TYPE_CHECKING:
    from aog_plugins.process._reaper_main import Tracked

PSUTIL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(psutil.__file__)))
ARGV = _reaper.reaper_argv(1, PSUTIL_DIR, shell=None)  # the Python program alone
REAPER_ARGVS = [
    pytest.param(_reaper.reaper_argv(1, PSUTIL_DIR), id="shell-stage"),
    pytest.param(ARGV, id="program-alone"),
]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Sleepers, each the leader of its own process group; killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _group(groups: list[subprocess.Popen[bytes]]) -> tuple[int, float]:
    proc = subprocess.Popen(SLEEPER, start_new_session=True)
    groups.append(proc)
    return proc.pid, psutil.Process(proc.pid).create_time()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"track 12 3.5 /tmp/d"], {12: (3.5, b"/tmp/d")}),
        ([b"track 12 3.5 -"], {12: (3.5, None)}),
        ([b"track 12 3.5 /a dir/with spaces"], {12: (3.5, b"/a dir/with spaces")}),
        ([b"track 12 3.5 -", b"untrack 12"], {}),
        ([b"track 12 3.5 -", b"track 12 4.5 -"], {12: (4.5, None)}),
        ([b"untrack 99"], {}),
        ([b"track x 3.5 -", b"track 12 y -", b"track 12 3.5", b"", b"kill 12", b"untrack"], {}),
        ([b"track 99999999999999999999999 1.0 -"], {99999999999999999999999: (1.0, None)}),
    ],
)
def test_protocol_lines(lines: list[bytes], expected: Tracked) -> None:
    tracked: Tracked = {}
    for line in lines:
        apply_line(line, tracked)
    assert tracked == expected


def test_the_program_starts_without_site_or_this_package() -> None:
    # -X importtime lists every module imported; at EOF with nothing tracked it just exits.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *ARGV[1:]],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()}
    # Nor what only the cleanup after EOF needs (the start competes with the plugin's
    # boot for the CPU on a host's first launch).
    lazy = ("shutil", "typing", "contextlib", "enum")
    for heavy in ("site", "aog_plugins", "grpc", "psutil", "google.protobuf", *lazy):
        assert not any(m == heavy or m.startswith(heavy + ".") for m in imported), heavy


@pytest.mark.parametrize(
    ("lines", "kept"),
    [
        (["track 12 3.5 /tmp/d"], ["track 12 3.5 /tmp/d"]),
        (["track 12 3.5 -", "untrack 12"], []),
        (
            ["track 12 3.5 -", "track 123 1.5 -", "track 1 2.5 -", "untrack 12"],
            ["track 123 1.5 -", "track 1 2.5 -"],
        ),
        (["track 12 3.5 -", "track 12 4.5 -", "untrack 12"], []),
        (["track 1 1.0 /a track 2 x", "untrack 2"], ["track 1 1.0 /a track 2 x"]),
        (
            ["track 1 1.0 /a dir/*?[x] $HOME `id` \\n", "garbage", "untrack 9"],
            ["track 1 1.0 /a dir/*?[x] $HOME `id` \\n"],
        ),
        (
            ["track 1 1.0 -", "track 2 2.0 -", "untrack 2", "track 3 3.0 -"],
            ["track 1 1.0 -", "track 3 3.0 -"],
        ),
        (["spawn /tmp/a b"], ["spawn /tmp/a b"]),
        (["spawn /tmp/a", "spawn /tmp/ab", "unspawn /tmp/a"], ["spawn /tmp/ab"]),
        (
            ["spawn /t/*?[x] $HOME", "track 4 1.0 /t/*?[x] $HOME", "unspawn /t/*?[x] $HOME"],
            ["track 4 1.0 /t/*?[x] $HOME"],
        ),
        (["spawn /a", "unspawn /a/b", "unspawn /"], ["spawn /a"]),
    ],
)
def test_the_shell_stage_keeps_exactly_the_tracked_lines(lines: list[str], kept: list[str]) -> None:
    # The stage execs its arguments with what it kept on stdin: here cat, to see it.
    stage = _reaper.reaper_argv(1, PSUTIL_DIR)[:4]
    done = subprocess.run(
        [*stage, "cat"],
        input="\n".join([*lines, "track 7 7.0 partial"]).encode(),
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert [line for line in done.stdout.decode().split("\n") if line] == kept


def test_the_shell_stage_exits_without_the_program_when_nothing_is_tracked() -> None:
    stage = _reaper.reaper_argv(1, PSUTIL_DIR)[:4]
    done = subprocess.run(
        [*stage, "sh", "-c", "echo ran"],
        input=b"track 1 1.0 -\nuntrack 1\n",
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == b""


@pytest.mark.parametrize("argv", REAPER_ARGVS)
def test_eof_kills_tracked_groups_only_and_removes_their_dirs(
    groups: list[subprocess.Popen[bytes]], tmp_path: Path, argv: list[str]
) -> None:
    ours, ours_born = _group(groups)
    untracked, untracked_born = _group(groups)
    stranger, stranger_born = _group(groups)
    ours_dir, kept_dir = tmp_path / "ours", tmp_path / "kept"
    ours_dir.mkdir()
    kept_dir.mkdir()
    (ours_dir / "socket").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(kept_dir)
    commands = (
        f"track {ours} {ours_born!r} {ours_dir}\n"
        f"track {untracked} {untracked_born!r} {kept_dir}\n"
        f"untrack {untracked}\n"
        f"track {stranger} {stranger_born - 100!r} {link}\n"  # a reused pid, not ours
        "garbage\ntrack 1 nope -\n"
        f"track {untracked} {untracked_born!r}"  # no newline: never a whole command
    ).encode()
    reaper = subprocess.run(argv, input=commands, timeout=30, check=False)
    assert reaper.returncode == 0
    wait_gone([ours], 5, "the tracked group to be killed")
    assert not gone(untracked), "an untracked group was killed"
    assert not gone(stranger), "a group that is not provably ours was killed"
    assert not ours_dir.exists()
    assert kept_dir.is_dir(), "a symlink was followed"


@pytest.mark.parametrize("argv", REAPER_ARGVS)
def test_eof_kills_the_plugin_of_a_spawn_still_announced(
    groups: list[subprocess.Popen[bytes]], tmp_path: Path, argv: list[str]
) -> None:
    # The host died between forking a plugin and tracking it: the reaper finds the plugin
    # by the socket dir in its environment, which no other process has.
    spawned_dir, done_dir, other_dir = tmp_path / "s p", tmp_path / "done", tmp_path / "other"
    for d in (spawned_dir, done_dir, other_dir):
        d.mkdir()

    def plugin(socket_dir: Path) -> int:
        env = {**os.environ, "PLUGIN_UNIX_SOCKET_DIR": str(socket_dir)}
        groups.append(subprocess.Popen(SLEEPER, start_new_session=True, env=env))
        return groups[-1].pid

    spawned, withdrawn, stranger = plugin(spawned_dir), plugin(done_dir), plugin(other_dir)
    commands = f"spawn {spawned_dir}\nspawn {done_dir}\nunspawn {done_dir}\n".encode()
    reaper = subprocess.run(argv, input=commands, timeout=30, check=False)
    assert reaper.returncode == 0
    wait_gone([spawned], 5, "the announced plugin to be killed")
    assert not spawned_dir.exists()
    assert not gone(withdrawn), "a withdrawn spawn was killed"
    assert not gone(stranger), "a process with another socket dir was killed"
    assert done_dir.is_dir()
    assert other_dir.is_dir()


def _pipe_fill(reaper_pid: int) -> tuple[int, int]:
    """(bytes waiting in the reaper's stdin pipe, the pipe's capacity)."""
    fd = os.open(f"/proc/{reaper_pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        waiting = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, waiting)
        return int.from_bytes(waiting, sys.byteorder), fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ
    finally:
        os.close(fd)


def test_untrack_never_waits_for_a_wedged_reaper(groups: list[subprocess.Popen[bytes]]) -> None:
    # A plugin's exit is handled on a thread that must not block: while another thread is
    # stuck writing to a stopped reaper (until the write timeout replaces it), untrack()
    # must return at once.
    reaper = _reaper.Reaper()
    pid, born = _group(groups)
    reaper.track(pid, born)
    first = reaper.pid
    assert first is not None
    fakes = [4_000_000 + n for n in range(6000)]  # create time 0: never killed
    os.kill(first, signal.SIGSTOP)

    def fill() -> None:
        for fake in fakes:
            reaper.track(fake, 0.0)

    filler = threading.Thread(target=fill)
    try:
        filler.start()
        deadline = time.monotonic() + 30
        last = -1
        while True:  # until the pipe is nearly full and stays so: the filler is blocked
            waiting, capacity = _pipe_fill(first)
            if (waiting == last and capacity - waiting < 4096) or time.monotonic() > deadline:
                break
            last = waiting
            time.sleep(0.01)
        assert capacity - waiting < 4096, f"the pipe never filled up: {waiting}/{capacity}"
        reaper.untrack(pid)
        assert reaper.pid == first, "untrack() waited for the wedged reaper to be replaced"
    finally:
        filler.join(60)
        for fake in [pid, *fakes]:
            reaper.untrack(fake)
        reaper.flush()
        assert reaper.tracked_pids() == []
        reaper._stop_locked()  # ends the replacement reaper; nothing is tracked any more
        assert gone(first), "the wedged reaper was not replaced"
