"""The interop matrix: which plugin executables, over which transports, expecting what.

A :class:`Family` is one plugin executable (Go or Python) plus what it answers where the
fixtures legitimately differ (service names, error codes); a :class:`Target` adds the
network and whether AutoMTLS is on. Go plugins are unix-only here: go-plugin v1.8.0's
``serverListener`` uses TCP only when ``runtime.GOOS == "windows"`` and has no option or
variable to change that (``PLUGIN_MIN_PORT``/``PLUGIN_MAX_PORT`` only shape the Windows
port range), so TCP is covered by the Python plugins, and by the Go host dialing them.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from aog_plugins import Plugin, RestartPolicy, launch
from tests.gofixtures.conftest import go_bins, run_host
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.support.gobuild import go_binaries
from tests.support.wait import wait_until

__all__ = [
    "FAMILIES",
    "MATRIX",
    "Family",
    "PluginPool",
    "Records",
    "Target",
    "go_bins",
    "leak_check",
    "run_host",
    "scrub_env",
    "targets",
]


def go_pattern(size: int) -> bytes:
    """The Go provider's ``big`` payload: a..z repeated."""
    block = bytes(range(ord("a"), ord("z") + 1))
    return (block * (size // 26 + 1))[:size]


def py_pattern(size: int) -> bytes:
    """The Python providers' ``big`` payload: 0..255 repeated."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@dataclass(frozen=True)
class Family:
    """One plugin executable and what it answers where the fixtures differ.

    ``None`` means the plugin has no such feature; cases that need it skip the family.
    """

    id: str
    lang: str  # "go" or "py"
    kind: str  # "local", "remote", or "" (neither: the Go misbehave plugin)
    program: str  # Go binary name or Python fixture script
    provider_name: str
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()  # after the program (the Python misbehave plugin's mode)
    echo_service: str = "echo"
    echo_path: tuple[str | int, ...] = ("request",)  # where the echoed text sits in the reply
    stream: tuple[str, dict[str, Any], int] = ("echo", {"chunks": 4}, 5)  # items incl. final
    no_final: dict[str, Any] | None = None  # a request whose stream ends with no final chunk
    mid_stream_failure: str | None = None  # two chunks, then code 4001
    failing: bool = True  # has ``fail`` (4001) and answers 4000 to unknown services
    bidi: bool = False
    bidi_error: tuple[str, bytes, int] | None = None  # message type, data -> failure code
    bidi_unknown_code: int | None = None
    no_creds_code: int = 0  # ValidateAuth before SetAuth
    bad_key: tuple[str, int] = ("", 0)  # api_key that ValidateAuth refuses, with code
    unhealthy_code: int | None = None  # HealthCheck after SetOperateStatus(2)
    bad_mode_code: int = 0  # StartEngine with an unknown mode
    big: Callable[[int], bytes] | None = None
    cert_curve: str = "P-256"

    @property
    def networks(self) -> tuple[str, ...]:
        return ("unix",) if self.lang == "go" else ("unix", "tcp")

    def argv(self) -> list[str]:
        if self.lang == "py":
            return plugin_cmd(self.program, *self.args)
        bins = go_binaries()
        return [str(bins.aog_provider if self.program == "aog-provider" else bins.misbehave)]

    def plugin_env(self, network: str = "unix") -> dict[str, str]:
        env = dict(self.env)
        if self.lang == "py":
            env["AOG_PLUGINS_NETWORK"] = network
        return env

    def echo_request(self, marker: str) -> bytes:
        return json.dumps({"messages": [{"role": "user", "content": marker}]}).encode()

    def echoed(self, response: bytes) -> str:
        value: Any = json.loads(response)
        for key in self.echo_path:
            value = value[key]
        assert isinstance(value, str)
        return value


GO_LOCAL = Family(
    id="go-local",
    lang="go",
    kind="local",
    program="aog-provider",
    provider_name="go-fixture-local",
    no_final={"chunks": 2, "final": False},
    mid_stream_failure="fail-mid-stream",
    bidi=True,
    bidi_error=("bogus", b"x", 2),
    bidi_unknown_code=4000,
    no_creds_code=14,
    bad_key=("invalid", 14),
    unhealthy_code=11,
    bad_mode_code=2,
    big=go_pattern,
    cert_curve="P-521",
)
FAMILIES = (
    GO_LOCAL,
    replace(
        GO_LOCAL,
        id="go-remote",
        kind="remote",
        provider_name="go-fixture-remote",
        env=(("AOG_FIXTURE_KIND", "remote"),),
    ),
    Family(
        id="go-misbehave",
        lang="go",
        kind="",
        program="misbehave",
        provider_name="misbehave",
        env=(("AOG_FIXTURE_MODE", "ok"),),
        stream=("echo", {}, 4),
        failing=False,
        cert_curve="P-521",
    ),
    Family(
        id="py-local",
        lang="py",
        kind="local",
        program="local_provider.py",
        provider_name="local-fixture",
        echo_service="chat",
        echo_path=("message", "content"),
        stream=("chat", {"messages": [{"content": "a b c"}]}, 5),
        mid_stream_failure="fail-stream",
        unhealthy_code=1005,
        bad_mode_code=2002,
        big=py_pattern,
    ),
    Family(
        id="py-remote",
        lang="py",
        kind="remote",
        program="remote_provider.py",
        provider_name="remote-fixture",
        echo_service="chat",
        echo_path=("choices", 0, "message", "content"),
        stream=("chat", {"chunks": 4}, 5),
        no_final={"chunks": 2, "final": False},
        mid_stream_failure="fail-stream",
        bidi=True,
        bidi_error=("text", b"error-item", 4004),
        bidi_unknown_code=4006,
        no_creds_code=1002,
        bad_key=("revoked", 4001),
        unhealthy_code=1005,
        big=py_pattern,
    ),
)
FAMILY = {f.id: f for f in FAMILIES}


@dataclass(frozen=True)
class Target:
    """A family over one network, plaintext or AutoMTLS."""

    family: Family
    network: str
    tls: bool

    @property
    def id(self) -> str:
        return f"{self.family.id}-{self.network}-{'automtls' if self.tls else 'plaintext'}"

    def launch(self, check: LeakCheck, **kwargs: Any) -> Plugin:
        """Start this target's plugin (no restarts: a crash must stay visible)."""
        kwargs.setdefault("restart", RestartPolicy.never())
        kwargs.setdefault("start_timeout", 30.0)
        env = {**self.family.plugin_env(self.network), **check.env, **kwargs.pop("env", {})}
        return launch(self.family.argv(), auto_mtls=self.tls, extra_env=env, **kwargs)


MATRIX = tuple(
    Target(family, network, tls)
    for family in FAMILIES
    for network in family.networks
    for tls in (False, True)
)


def targets(predicate: Callable[[Family], object] = lambda f: True) -> list[Any]:
    """The matrix rows whose family satisfies ``predicate``, as pytest params."""
    return [pytest.param(t, id=t.id) for t in MATRIX if predicate(t.family)]


@dataclass
class PluginPool:
    """Plugins shared by one module's stateless cases, one per target, started on demand.

    ``close()`` kills them all, requires a clean exit (code 0) from each, and fails if a
    tagged process or a socket dir is left over.
    """

    check: LeakCheck = field(default_factory=LeakCheck)
    plugins: dict[str, Plugin] = field(default_factory=dict)

    def get(self, target: Target) -> Plugin:
        plugin = self.plugins.get(target.id)
        if plugin is None or plugin.exited:
            plugin = self.plugins[target.id] = target.launch(self.check)
        return plugin

    def close(self) -> None:
        codes = {}
        for name, plugin in self.plugins.items():
            plugin.kill()
            codes[name] = plugin.exit_code
        self.check.verify(zombies=False)  # other tests' children may be mid-reap
        assert all(code == 0 for code in codes.values()), f"unclean exits: {codes}"


@pytest.fixture(scope="module")
def pool() -> Iterator[PluginPool]:
    """The module's shared plugins (see :class:`PluginPool`)."""
    shared = PluginPool()
    try:
        yield shared
    finally:
        shared.close()


class Records(logging.Handler):
    """Collects the log records of one plugin logger, for assertions."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(level=1)
        self.logger = logger
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == self.logger.name:  # not the lifecycle child logger
            self.records.append(record)

    def messages(self) -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in list(self.records)]

    def wait_for(self, message: str, timeout: float = 10.0) -> logging.LogRecord:
        """The first record whose message starts with ``message`` (leading blanks aside),
        waiting for it."""

        def found() -> logging.LogRecord | None:
            for record in list(self.records):
                if record.getMessage().lstrip(" ").startswith(message):
                    return record
            return None

        return wait_until(found, timeout, lambda: f"log record {message!r} in {self.messages()}")


@pytest.fixture
def records() -> Iterator[Records]:
    """A fresh logger (pass ``records.logger`` to launch) and the records it receives."""
    logger = logging.getLogger(f"aog_plugins.plugin.interop-{uuid.uuid4().hex[:8]}")
    logger.setLevel(1)
    logger.propagate = False
    handler = Records(logger)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def scrub_env() -> dict[str, str]:
    """This process's environment without go-plugin protocol variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_")}
