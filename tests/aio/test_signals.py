"""An asyncio host gets the sync API's signal behaviour: aio.launch() starts plugins on a
thread (where handlers cannot be installed), then installs them on the loop's main
thread, so SIGTERM stops the plugin before the host terminates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.wait import wait_gone

HOST = Path(__file__).resolve().parent / "sigterm_host.py"


def test_sigterm_stops_the_plugins_of_an_asyncio_host(leak_check: LeakCheck) -> None:
    host = subprocess.Popen(
        [sys.executable, str(HOST), json.dumps(plugin_cmd("echo_plugin.py"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **leak_check.env},
        text=True,
    )
    try:
        assert host.stdout is not None
        pid = json.loads(host.stdout.readline())["pid"]
        host.send_signal(signal.SIGTERM)
        _, err = host.communicate(timeout=60)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == -signal.SIGTERM, err
    assert "-> EXITED: stopped" in err, "the SIGTERM handler did not stop the plugin"
    wait_gone([pid], 5)
