"""Socket dirs of dead hosts are removed once per process: by its first start (while the
plugin boots) or by its first make_socket_dir().

Every test runs the cleanup in a fresh process whose TMPDIR is a private short dir, so
the dirs planted here are invisible to other tests running at the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    ENV_UNIX_SOCKET_DIR,
    generate_certificate,
    host_plugin_env,
)
from aog_plugins.process._tempdir import remove_stale_dirs
from tests.faults.conftest import ROOT, leak_check, plugin_cmd, short_tmpdir
from tests.process.conftest import LeakCheck

__all__ = ["leak_check", "short_tmpdir"]

# Makes a socket dir (the cleanup runs first), plants argv[1] afterwards, makes another:
# the cleanup must not run twice in one process.
FRESH_HOST = textwrap.dedent(
    """
    import json, os, sys
    from aog_plugins.process._tempdir import make_socket_dir, remove_socket_dir
    first = make_socket_dir()
    os.mkdir(sys.argv[1])
    second = make_socket_dir()
    print(json.dumps([first, second]))
    remove_socket_dir(first)
    remove_socket_dir(second)
    """
)


# Launches two plugins; between them plants argv[2]: only the first start sweeps.
LAUNCHING_HOST = textwrap.dedent(
    """
    import json, os, sys
    from aog_plugins import launch
    cmd = json.loads(sys.argv[1])
    with launch(cmd) as first:
        os.mkdir(sys.argv[2])
        with launch(cmd) as second:
            second.ping()
    """
)


def _run_fresh_host(tmpdir: Path, late_dir: Path) -> list[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", FRESH_HOST, str(late_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    made: list[str] = json.loads(run.stdout)
    return made


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A running process started before any dir the test makes."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _plant(base: Path, name: str, *, age: float = 0.0) -> Path:
    path = base / name
    path.mkdir(mode=0o700)
    (path / "plugin.sock").write_text("left behind")
    if age:
        old = time.time() - age
        os.utime(path, (old, old))
    return path


def test_dirs_of_dead_hosts_go_and_live_hosts_stay(short_tmpdir: Path, live_pid: int) -> None:
    time.sleep(0.05)  # the live process is strictly older than its dir
    dead = _plant(short_tmpdir, f"aogp-{_dead_pid()}-abc")
    live = _plant(short_tmpdir, f"aogp-{live_pid}-def")
    # A live pid whose process is younger than the dir: the pid was reused.
    reused = _plant(short_tmpdir, f"aogp-{live_pid}-ghi", age=3600)
    unrelated = _plant(short_tmpdir, f"aogp-notapid-{_dead_pid()}")
    late = short_tmpdir / f"aogp-{_dead_pid()}-late"

    made = _run_fresh_host(short_tmpdir, late)

    assert not dead.exists()
    assert not reused.exists()
    assert live.is_dir()
    assert (live / "plugin.sock").exists()
    assert unrelated.is_dir()
    assert late.is_dir(), "the cleanup ran again at the second make_socket_dir()"
    assert all(Path(d).parent == short_tmpdir for d in made)
    assert not any(Path(d).exists() for d in made)


def test_files_and_symlinks_are_never_touched(short_tmpdir: Path) -> None:
    dead = _dead_pid()
    target = _plant(short_tmpdir, "target")
    plain_file = short_tmpdir / f"aogp-{dead}-file"
    plain_file.write_text("not a dir")
    link = short_tmpdir / f"aogp-{dead}-link"
    link.symlink_to(target)

    _run_fresh_host(short_tmpdir, short_tmpdir / "late")

    assert plain_file.is_file()
    assert link.is_symlink()
    assert (target / "plugin.sock").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="planting another user's dir needs root")
def test_other_users_dirs_are_never_touched(short_tmpdir: Path) -> None:
    foreign = _plant(short_tmpdir, f"aogp-{_dead_pid()}-foreign")
    os.chown(foreign, 65534, 65534)
    ours = _plant(short_tmpdir, f"aogp-{_dead_pid()}-ours")

    _run_fresh_host(short_tmpdir, short_tmpdir / "late")

    assert foreign.is_dir()
    assert not ours.exists()


def test_relay_dir_of_a_sigkilled_plugin_is_recognised_as_stale(
    short_tmpdir: Path, leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Go host (P-521 client cert, no PLUGIN_UNIX_SOCKET_DIR) makes a Python plugin start
    # its TLS relay in a private dir of its own; SIGKILL leaves that dir behind.
    host_cert = generate_certificate("P-521")
    env = {
        **os.environ,
        **leak_check.env,
        **host_plugin_env(AOG_HANDSHAKE, [1], client_cert_pem=host_cert.cert_pem),
        "TMPDIR": str(short_tmpdir),
    }
    env.pop(ENV_UNIX_SOCKET_DIR, None)
    plugin = subprocess.Popen(plugin_cmd("echo_plugin.py"), env=env, stdout=subprocess.PIPE)
    try:
        assert plugin.stdout is not None
        assert plugin.stdout.readline(), "no handshake line"
        sockets = {str(c.laddr) for c in psutil.Process(plugin.pid).net_connections(kind="unix")}
        relay_dirs = {os.path.dirname(s) for s in sockets if s} - {str(short_tmpdir)}
        assert len(relay_dirs) == 1, sockets
    finally:
        plugin.kill()
        plugin.wait()
        if plugin.stdout is not None:
            plugin.stdout.close()
    (relay_dir,) = relay_dirs
    assert os.path.isdir(relay_dir), "SIGKILL gave the plugin no chance to clean up"
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmpdir))
    assert relay_dir in remove_stale_dirs(), "the relay dir is not recognised as stale"
    assert not os.path.exists(relay_dir)


def test_the_first_start_of_a_process_sweeps_once(
    short_tmpdir: Path, leak_check: LeakCheck
) -> None:
    dead = _plant(short_tmpdir, f"aogp-{_dead_pid()}-abc")
    late = short_tmpdir / f"aogp-{_dead_pid()}-late"
    env = {**os.environ, **leak_check.env, "TMPDIR": str(short_tmpdir), "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", LAUNCHING_HOST, json.dumps(plugin_cmd("echo_plugin.py")), late],
        env=env,
        timeout=120,
        check=True,
    )
    assert not dead.exists(), "the first launch of the process did not sweep"
    assert late.is_dir(), "the second launch swept again"
