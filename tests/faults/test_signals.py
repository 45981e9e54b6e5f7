"""SIGINT/SIGTERM in a real host: handlers never block, chain, and can be opted out of.

Each test runs a host process (``python -c``) that logs its plugin's transitions on
stderr, so the test can tell a plugin the host stopped itself from one the reaper got.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time

import pytest

from tests.faults.conftest import Host, HostFactory, gone, plugin_cmd, wait_gone
from tests.process.conftest import LeakCheck

HOST = textwrap.dedent(
    """
    import faulthandler, json, logging, os, signal, sys, threading, time
    import aog_plugins

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    faulthandler.register(signal.SIGUSR1)  # the test's stack dump when the host hangs
    faulthandler.enable()  # and the stacks of a crash (a forked child once died of SIGSEGV)
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
    elif mode == "asyncio":
        # The loop's add_signal_handler takes the process's one wakeup fd first.
        import asyncio
        loop = asyncio.new_event_loop()
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        plugin = start()
    else:
        plugin = start()
    if mode == "masked-main":
        # The main thread cannot take the signal; the application's own thread can, and
        # Python's handler then waits for the main thread, asleep for 60 s.
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    handlers = {s.name: str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)}
    print(json.dumps({"pid": plugin.pid, "handlers": handlers}), flush=True)
    if mode == "kill":
        # Blocks ~60 s (the plugin ignores Shutdown and SIGTERM) unless hurried.
        threading.Thread(target=lambda: (stopping.wait(), print("{}", flush=True))).start()
        plugin.kill(grace=60)
        print(json.dumps({"killed": plugin.state.value}), flush=True)
    elif mode == "asyncio":
        print("{}", flush=True)
        loop.run_until_complete(asyncio.sleep(60))
    elif mode == "refork":
        child = os.fork()
        if child == 0:  # a child that installs the handlers again, then forks itself
            from aog_plugins.process import install_signal_handlers
            install_signal_handlers()
            grandchild = os.fork()
            if grandchild == 0:
                os._exit(0)
            os.waitpid(grandchild, 0)
            mask = next(line for line in open("/proc/self/status") if line.startswith("SigBlk"))
            bits = int(mask.split()[1], 16)
            blocked = [s.name for s in (signal.SIGINT, signal.SIGTERM) if bits >> (s - 1) & 1]
            os.write(1, (json.dumps({"blocked_after_fork": blocked}) + "\\n").encode())
            os._exit(0)
        os.waitpid(child, 0)
        plugin.kill()
        sys.exit(0)
    elif mode == "fork":
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        print(json.dumps({"child": child}), flush=True)
        _, status = os.waitpid(child, 0)
        time.sleep(0.5)  # time for a (wrongly) woken killer thread to act
        plugin.ping()
        after = {"child_signal": os.WTERMSIG(status), "state": plugin.state.value}
        print(json.dumps(after), flush=True)
        plugin.kill()
        sys.exit(0)
    elif mode == "exit":
        # Stopping the (stubborn) plugin at exit takes its grace and then some.
        print("{}", flush=True)
        sys.exit(0)
    elif mode == "call":
        # The main thread is in a call when SIGTERM comes; its own code then goes on.
        print("{}", flush=True)
        try:
            plugin.client.invoke_service("slow", b'{"seconds": 60}', timeout=90)
        except Exception as exc:
            print(json.dumps({"call": type(exc).__name__, "text": str(exc)}), flush=True)
        sys.exit(0)
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


def test_sigterm_stops_the_plugins_while_the_main_thread_cannot_run_the_handler(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    # Python runs the handler on the main thread only; here the application's thread takes
    # the signal and the main thread sleeps. The library must not wait for it: the plugin
    # is stopped and the host dies of SIGTERM's default action at once (before: 60 s).
    host, pid = _start(make_host, "masked-main", plugin_cmd("echo_plugin.py"))
    host.proc.send_signal(signal.SIGTERM)
    code = _exit_code(host)
    assert code is not None, f"the host waited for its main thread: {host.stderr_text()}"
    assert code == -signal.SIGTERM
    assert "SIGTERM received" in host.stderr_text()
    assert "-> EXITED: stopped" in host.stderr_text(), "the host did not stop its plugin"
    assert gone(pid)


MASKS = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    import aog_plugins
    from aog_plugins.process import RestartPolicy

    def blocked(path):
        for line in open(path):
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return [s.name for s in (signal.SIGINT, signal.SIGTERM) if mask >> (s - 1) & 1]

    def threads():
        out = {}
        for tid in os.listdir("/proc/self/task"):
            if int(tid) != threading.main_thread().native_id:
                name = open(f"/proc/self/task/{tid}/comm").read().strip()
                out[f"{tid} {name}"] = blocked(f"/proc/self/task/{tid}/status")
        return out

    plugin = aog_plugins.launch(
        json.loads(sys.argv[1]), restart=RestartPolicy(backoff_base=0.05, min_uptime=30)
    )
    list(plugin.client.invoke_service_stream("chat", b'{"chunks": 2}'))
    first = plugin.pid
    os.kill(first, signal.SIGKILL)  # the supervisor restarts it, from a thread of ours
    for _ in range(1500):  # 30 s at most
        if plugin.pid != first and plugin.state.value == "RUNNING":
            break
        threading.Event().wait(0.02)
    list(plugin.client.invoke_service_stream("chat", b'{"chunks": 2}'))
    print(json.dumps({
        "main": blocked("/proc/self/status"),
        "threads": threads(),
        "restarted plugin": blocked(f"/proc/{plugin.pid}/status"),
    }), flush=True)
    plugin.kill()
    """
)


def test_only_the_applications_threads_take_its_signals(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    # Every thread the library (or grpcio for it) starts blocks SIGINT and SIGTERM, so the
    # kernel hands them to the main thread, where Python runs handlers; a plugin, even one
    # restarted from one of those threads, still starts with both deliverable.
    host = make_host(MASKS, json.dumps(plugin_cmd("remote_provider.py")))
    info = host.read()
    assert info["main"] == []
    assert len(info["threads"]) >= 5, info  # the I/O loop, grpcio's, the stdio pump...
    open_to_signals = {
        thread: mask for thread, mask in info["threads"].items() if mask != ["SIGINT", "SIGTERM"]
    }
    assert open_to_signals == {}
    assert info["restarted plugin"] == []
    assert _exit_code(host) == 0


def test_sigterm_with_an_event_loop_owning_the_wakeup_fd(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    # Then only the Python-level handler tells the killer thread (no C-level news).
    host, pid = _start(make_host, "asyncio", plugin_cmd("echo_plugin.py"))
    assert host.read() == {}
    host.proc.send_signal(signal.SIGTERM)
    assert _exit_code(host) == -signal.SIGTERM
    assert "SIGTERM received" in host.stderr_text()
    assert "-> EXITED: stopped" in host.stderr_text(), "the host did not stop its plugin"
    assert gone(pid)


def test_sigterm_during_a_call_ends_the_host_of_sigterm(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    # The killer stops the plugin, so the call fails and the main thread's code exits 0
    # before the killer re-raised SIGTERM: the host used to exit 0 (and a CLI 1, blaming
    # the plugin). The call's error now says who stopped the plugin, and the host still
    # dies of SIGTERM.
    host, pid = _start(make_host, "call", plugin_cmd("remote_provider.py"))
    assert host.read() == {}
    time.sleep(0.5)  # the call is under way
    host.proc.send_signal(signal.SIGTERM)
    assert _exit_code(host) == -signal.SIGTERM
    assert gone(pid)
    # The main thread's report, unless SIGTERM's default action ended the host first.
    assert host.proc.stdout is not None
    line = host.proc.stdout.readline()
    if line:
        failed = json.loads(line)
        assert "stopped by this host: SIGTERM received" in failed["text"], failed


def test_ctrl_c_while_the_plugins_stop_at_exit_does_not_cut_it_short(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    host, pid = _start(make_host, "exit")
    assert host.read() == {}
    time.sleep(0.3)  # in the exit hook now: the plugin ignores Shutdown and SIGTERM
    host.proc.send_signal(signal.SIGINT)
    assert _exit_code(host) == 0
    assert "Traceback" not in host.stderr_text(), host.stderr_text()
    assert "-> EXITED: stopped" in host.stderr_text(), "the host did not stop its plugin"
    assert gone(pid)


def test_a_forked_childs_signal_is_its_own(make_host: HostFactory, leak_check: LeakCheck) -> None:
    # The child inherits the wakeup fd, a pipe to the parent's killer thread: a SIGTERM to
    # the child must end the child only, never the parent's plugins.
    host, _ = _start(make_host, "fork", plugin_cmd("echo_plugin.py"))
    child = host.read()["child"]
    os.kill(child, signal.SIGTERM)
    after = host.read()
    assert after == {"child_signal": signal.SIGTERM, "state": "RUNNING"}, host.stderr_text()
    assert _exit_code(host) == 0
    assert "SIGTERM received" not in host.stderr_text()


def test_forking_again_in_a_forked_child_leaves_its_signals_unblocked(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    # SIGTERM and SIGINT are blocked only across a fork; a child that installs the
    # handlers again must not end up with them blocked after its own fork.
    host, _ = _start(make_host, "refork", plugin_cmd("echo_plugin.py"))
    assert host.read() == {"blocked_after_fork": []}
    assert _exit_code(host) == 0
