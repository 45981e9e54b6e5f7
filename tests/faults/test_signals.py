"""SIGINT/SIGTERM in a real host: handlers never block, chain, and can be opted out of.

Each test runs a host process (``python -c``) that logs its plugin's transitions on
stderr, so the test can tell a plugin the host stopped itself from one the reaper got.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time

import pytest

from tests.faults.conftest import Host, HostFactory, gone, plugin_cmd, wait_gone
from tests.process.conftest import LeakCheck

HOST = textwrap.dedent(
    """
    import faulthandler, json, logging, signal, sys, threading, time
    import aog_plugins

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    faulthandler.register(signal.SIGUSR1)  # the test's stack dump when the host hangs
    mode, cmd = sys.argv[1], json.loads(sys.argv[2])
    stopping = threading.Event()

    def on_event(event):
        if event.new.value == "STOPPING":
            stopping.set()

    def start(**options):
        return aog_plugins.launch(cmd, on_event=on_event, **options)

    if mode == "off-main-thread":
        plugins = []
        worker = threading.Thread(target=lambda: plugins.append(start()))
        worker.start()
        worker.join()
        plugin = plugins[0]
        from aog_plugins.process import install_signal_handlers
        install_signal_handlers()
    elif mode == "opt-out":
        plugin = start(install_signal_handlers=False)
    else:
        plugin = start()
    handlers = {s.name: str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)}
    print(json.dumps({"pid": plugin.pid, "handlers": handlers}), flush=True)
    if mode == "kill":
        # Blocks ~60 s (the plugin ignores Shutdown and SIGTERM) unless hurried.
        threading.Thread(target=lambda: (stopping.wait(), print("{}", flush=True))).start()
        plugin.kill(grace=60)
        print(json.dumps({"killed": plugin.state.value}), flush=True)
    elif mode == "catch":
        try:
            print("{}", flush=True)  # inside the try: the test may interrupt from now on
            time.sleep(60)
        except KeyboardInterrupt:
            plugin.ping()
            print(json.dumps({"state": plugin.state.value}), flush=True)
            plugin.kill()
            sys.exit(0)
    time.sleep(60)
    """
)

STUBBORN = plugin_cmd("misbehave.py", "ignore-shutdown")


def _start(make_host: HostFactory, mode: str, cmd: list[str] = STUBBORN) -> tuple[Host, int]:
    host = make_host(HOST, mode, json.dumps(cmd))
    info = host.read()
    print("host signal handlers:", info["handlers"])
    return host, info["pid"]


def _exit_code(host: Host, timeout: float = 20.0) -> int | None:
    try:
        return host.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        host.proc.send_signal(signal.SIGUSR1)  # its threads' stacks, for the failure text
        time.sleep(0.5)
        return None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_kill_does_not_deadlock(
    make_host: HostFactory, leak_check: LeakCheck, sig: signal.Signals
) -> None:
    host, pid = _start(make_host, "kill")
    assert host.read() == {}, "kill() did not start"  # the host is inside kill() now
    host.proc.send_signal(sig)
    code = _exit_code(host)
    assert code is not None, f"the host hung after {sig.name} during kill(): {host.stderr_text()}"
    assert code == -sig  # KeyboardInterrupt, or SIGTERM's default action, after cleanup
    assert "STOPPING -> EXITED" in host.stderr_text(), "the host did not stop its plugin"
    wait_gone([pid], 5)


def test_handlers_installed_from_the_main_thread_after_an_off_thread_launch(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    host, pid = _start(make_host, "off-main-thread", plugin_cmd("echo_plugin.py"))
    host.proc.send_signal(signal.SIGTERM)
    assert _exit_code(host) == -signal.SIGTERM
    assert "-> EXITED: stopped" in host.stderr_text(), "the SIGTERM handler did not stop it"
    assert "SIGTERM received" in host.stderr_text()
    assert gone(pid)


def test_opting_out_leaves_the_signals_to_the_application(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    host = make_host(HOST, "opt-out", json.dumps(plugin_cmd("echo_plugin.py")))
    info = host.read()
    assert info["handlers"] == {
        "SIGINT": str(signal.default_int_handler),
        "SIGTERM": str(signal.SIG_DFL),
    }
    host.proc.send_signal(signal.SIGTERM)
    assert _exit_code(host) == -signal.SIGTERM
    assert "EXITED" not in host.stderr_text(), "the host was not meant to stop it on SIGTERM"
    wait_gone([info["pid"]], 5, "the reaper to kill it")


def test_a_caught_keyboard_interrupt_leaves_the_plugins_running(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    host, _ = _start(make_host, "catch", plugin_cmd("echo_plugin.py"))
    assert host.read() == {}
    host.proc.send_signal(signal.SIGINT)
    assert host.read() == {"state": "RUNNING"}
    assert _exit_code(host) == 0
