"""A plugin's hostile or buggy output (stdout, stderr, GRPCStdio) against the host: each
case with a real plugin process (``fixtures/plugins/hostile_output.py``)."""

from __future__ import annotations

import logging
import re
import signal
import threading

import pytest

from aog_plugins import PluginState, RestartPolicy, launch
from aog_plugins._cli_show import describe_error
from aog_plugins.errors import MalformedHandshakeError, PluginExitedError
from aog_plugins.process import TRACE
from aog_plugins.testing import crash
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.wait import wait_until


def test_deeply_nested_json_on_stderr_is_text_and_later_lines_still_arrive(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    # json.loads raises RecursionError (not ValueError) on such a line: it used to escape
    # the parser, losing the rest of the pipe's chunk and ending the GRPCStdio pump, so
    # nothing the plugin wrote afterwards was read any more.
    name = "aog_plugins.plugin.test-deep-json"
    with (
        caplog.at_level(TRACE, logger=name),
        launch(
            plugin_cmd("hostile_output.py", "deep-json"),
            logger=logging.getLogger(name),
            restart=RestartPolicy.never(),
            extra_env=leak_check.env,
        ) as plugin,
    ):
        wanted = {"after-deep pipe", "after-deep stdio"}
        wait_until(
            lambda: wanted <= {r.getMessage() for r in caplog.records if r.name == name},
            20,
            lambda: (
                f"{wanted} among the plugin's records; the host logged "
                f"{[r.getMessage()[:80] for r in caplog.records if r.levelno >= logging.ERROR]}"
            ),
        )
        plugin.ping()
    deep = [r for r in caplog.records if r.name == name and r.getMessage().startswith('{"@')]
    assert len(deep) == 2  # kept whole, as a text line
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_exit_is_seen_while_a_logging_handler_holds_up_the_plugins_stderr(
    leak_check: LeakCheck,
) -> None:
    # The exit used to be queued behind the plugin's output: with a slow (here: stuck)
    # handler and a chatty plugin, up to a megabyte of lines went first, so a crash was
    # not seen (no restart, an unreaped zombie) and kill() escalated to SIGKILL and gave up.
    logger = logging.getLogger("aog_plugins.plugin.test-stuck-handler")
    release, entered = threading.Event(), threading.Event()

    class Stuck(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: see below
            if record.name == logger.name:  # the plugin's lines; its lifecycle records pass
                entered.set()
                release.wait(60)
            return True

    handler = Stuck()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with launch(
            plugin_cmd("hostile_output.py", "stderr-flood"),
            logger=logger,
            restart=RestartPolicy.never(),
            extra_env=leak_check.env,
        ) as plugin:
            wait_until(entered.is_set, 20, "the handler to get the first stderr line")
            crash(plugin, signal.SIGKILL, timeout=20)  # WaitTimeoutError: exit not seen
            assert plugin.state is PluginState.EXITED
            assert plugin.exit_code == -signal.SIGKILL
    finally:
        release.set()
        logger.removeHandler(handler)
        logger.propagate = True


def test_stdout_closed_without_a_handshake_fails_at_once(leak_check: LeakCheck) -> None:
    # The host used to wait out start_timeout (60 s by default) and then blame a slow or
    # stuck plugin (StartTimeoutError); go-plugin fails as soon as stdout ends.
    with pytest.raises(MalformedHandshakeError) as info:
        launch(
            plugin_cmd("hostile_output.py", "close-stdout"),
            start_timeout=30,
            restart=RestartPolicy.never(),
            extra_env=leak_check.env,
        )
    error = info.value
    assert "closed its stdout without printing a handshake line" in str(error)
    assert error.exit_code is None  # still running: the host stopped it
    assert "closing stdout" in error.stderr_tail
    assert error.diagnosis


def test_stderr_tail_can_be_read_while_the_plugin_writes_stderr(leak_check: LeakCheck) -> None:
    # tail() iterated the deque the reader appends to: "RuntimeError: deque mutated
    # during iteration" out of Plugin.stderr_tail() (and crash reports) of a chatty plugin.
    with launch(
        plugin_cmd("hostile_output.py", "stderr-flood"),
        restart=RestartPolicy.never(),
        extra_env=leak_check.env,
    ) as plugin:
        wait_until(plugin.stderr_tail, 20, "the plugin's first stderr lines")
        for _ in range(300_000):
            assert plugin.stderr_tail()


_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def test_terminal_escapes_and_crs_in_stderr_are_shown_escaped(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    # They reached log records, error messages and the CLI raw: a plugin could set the
    # user's terminal title, erase the line it was on, and write a line that looks like
    # another plugin's (or the host's) over it.
    name = "aog_plugins.plugin.test-escapes"
    with caplog.at_level(TRACE, logger=name), pytest.raises(PluginExitedError) as info:
        launch(
            plugin_cmd("hostile_output.py", "escapes"),
            logger=logging.getLogger(name),
            restart=RestartPolicy.never(),
            extra_env=leak_check.env,
        )
    error = info.value
    assert error.exit_code == 3
    records = [r.getMessage() for r in caplog.records if r.name == name]
    assert len(records) == 2
    for text in [str(error), error.stderr_tail, describe_error(error), *records]:
        assert not _CONTROL_BUT_NEWLINE.search(text), text
        # A lone surrogate from a JSON escape made a UTF-8 log handler drop the record.
        text.encode("utf-8")
    for text in [describe_error(error), records[0]]:  # the JSON line decoded
        assert "\\x1b]0;PWNED\\x07\\x1b[2K\\rplugin other ERROR" in text
    cli_tail = describe_error(error).split("the plugin's last stderr lines:\n", 1)[1]
    assert len(cli_tail.splitlines()) == 2  # one shown line per stderr line
    assert "\\x9b2J" in records[1]
