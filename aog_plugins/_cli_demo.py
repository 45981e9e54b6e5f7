"""``aog-plugins demo``: start the bundled echo plugin and show everything a host does.

The plugin ships inside the package (:mod:`aog_plugins.examples`), so the demo works
after a plain ``pip install`` from any directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Literal

import psutil

from aog_plugins._cli_base import EXIT_FAILED, EXIT_OK, Command
from aog_plugins._cli_show import handshake_doc
from aog_plugins.examples import ECHO_DIR, echo_command, echo_env

__all__ = ["DEMO"]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG - 5)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _demo(args: argparse.Namespace) -> int:
    from aog_plugins import RestartPolicy, launch

    logger = logging.getLogger("aog_plugins.plugin.echo")
    logger.setLevel(logging.DEBUG - 5)
    logger.propagate = False
    collected = _Collect()
    logger.addHandler(collected)
    network: Literal["unix", "tcp"] = "tcp" if args.tcp else "unix"
    print(f"starting the echo example plugin ({ECHO_DIR}) with AutoMTLS over {network}")
    started = time.monotonic()
    plugin = launch(
        echo_command(network),
        auto_mtls=True,
        extra_env=echo_env(),
        logger=logger,
        restart=RestartPolicy.never(),
    )
    with plugin:
        hs = handshake_doc(plugin.handshake)
        print(f"  started in {time.monotonic() - started:.2f}s, pid {plugin.pid}")
        print(
            f"  handshake: core {hs['core_version']}, app {hs['app_version']}, {hs['network']} "
            f"{hs['address']}, {hs['protocol']}"
        )
        if hs["auto_mtls"]:
            print(
                f"  plugin certificate: {hs['server_cert_curve']}, "
                f"sha256 {hs['server_cert_sha256'][:16]}..."
            )
        plugin.ping()
        print("  health: SERVING")
        client = plugin.client
        manifest = client.get_manifest()
        services = [s.service_name for s in manifest.services]
        print(f"  manifest: provider {manifest.provider.name!r}, services {services}")
        reply = client.invoke_service("chat", json.dumps({"hello": "aog"}).encode())
        print(f"  invoke_service('chat') -> {reply.decode()}")
        print("  invoke_service_stream('chat'):")
        for chunk in client.invoke_service_stream("chat", json.dumps({"chunks": 3}).encode()):
            print(f"    chunk {chunk.data.decode()!r} final={chunk.is_final}")
        time.sleep(0.2)  # let the plugin's last log lines arrive
        print("  plugin logs:")
        for record in collected.records:
            print(f"    [{record.levelname}] {record.getMessage()}")
        socket_dir = os.path.dirname(plugin.handshake.address) if hs["network"] == "unix" else None
        process = psutil.Process(plugin.pid)
        tree = [process, *process.children(recursive=True)]
    print("shut down:")
    print(f"  exit code {plugin.exit_code}, state {plugin.state.value}")
    left = [p.pid for p in tree if _alive(p)]
    print(f"  plugin processes still running: {left or 'none'}")
    dir_left = socket_dir is not None and os.path.exists(socket_dir)
    if socket_dir:
        print(f"  socket dir {socket_dir} exists: {'yes' if dir_left else 'no'}")
    return EXIT_FAILED if left or dir_left else EXIT_OK


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tcp", action="store_true", help="serve over TCP on 127.0.0.1 instead of a unix socket"
    )


DEMO = Command(
    name="demo",
    summary="start the bundled example plugin and talk to it",
    description=(
        "Start the echo example plugin that ships with aog-plugins (AutoMTLS), print its\n"
        "handshake, health, manifest, a unary and a streamed call and its logs, then shut\n"
        "it down and show that nothing is left running."
    ),
    examples="""\
examples:
  aog-plugins demo
  aog-plugins demo --tcp""",
    configure=_configure,
    run=_demo,
)
