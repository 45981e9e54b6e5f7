"""Ctrl-C: the CLI stops the plugin and exits 130, without a traceback (issue 9, item 15);
a reader that goes away (``| head``) ends it quietly too, and so do a closed or full
stdout or stderr."""

from __future__ import annotations

import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.cli.conftest import Result, Running, cli, fixture
from tests.manager.conftest import Layout


def test_sigint_during_a_stream_exits_130_quietly(start_cli: Callable[..., Running]) -> None:
    running = start_cli("invoke", fixture("remote_provider.py"), "slow-stream", "--stream")
    plugin = running.plugin("remote_provider.py")
    assert running.proc.stdout is not None
    assert running.proc.stdout.readline().startswith('{"index": 0}')  # streaming now
    result = running.interrupt()  # also checks the plugin and socket dir are gone
    assert result.code == 130
    assert "Traceback" not in result.err
    assert "interrupted" in result.err
    assert not plugin.is_running() or plugin.status() == "zombie"


def test_sigterm_during_a_call_ends_of_sigterm_without_blaming_the_plugin(
    start_cli: Callable[..., Running],
) -> None:
    # As under `timeout`: the plugin is stopped, the CLI dies of SIGTERM (143 in a shell).
    # It used to exit 1, saying "the plugin process died during the call".
    running = start_cli(
        "invoke", fixture("remote_provider.py"), "slow", "--data", '{"seconds": 60}'
    )
    running.plugin("remote_provider.py")
    time.sleep(0.5)  # the call is under way (it fails the same if not yet)
    result = running.interrupt(signal.SIGTERM)
    assert result.code == -signal.SIGTERM, result.err
    if result.err:  # unless SIGTERM's default action came before the message
        assert "this command stopped the plugin (SIGTERM received)" in result.err
    assert "died" not in result.err
    assert "Traceback" not in result.err


def test_sigint_while_the_plugin_starts_exits_130_quietly(
    start_cli: Callable[..., Running],
) -> None:
    running = start_cli("inspect", fixture("misbehave.py"), "--plugin-arg", "never-handshake")
    running.plugin("never-handshake")  # spawned, waiting for a handshake that never comes
    result = running.interrupt()
    assert result.code == 130
    assert "Traceback" not in result.err
    assert result.out == ""


def test_closed_stdout_ends_a_stream_without_a_traceback() -> None:
    plugin = fixture("remote_provider.py")
    args = ["invoke", plugin, "slow-stream", "--stream", "--data", '{"interval": 0.01}']
    command = shlex.join([sys.executable, "-m", "aog_plugins", *args])
    result = cli(command=["bash", "-o", "pipefail", "-c", f"{command} | head -n 2"])
    assert result.out.splitlines() == ['{"index": 0}', '{"index": 1}']
    assert result.code == 1  # pipefail: the CLI's status
    assert "Traceback" not in result.err
    assert "BrokenPipe" not in result.err


def _shell(command: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI run by bash with ``ARGS`` then the redirections in ``command``."""
    cli_command = shlex.join([sys.executable, "-m", "aog_plugins", *args])
    return cli(command=["bash", "-c", command.format(cli=cli_command)], env=env)


def test_a_full_disk_under_stdout_is_one_error_line() -> None:
    # Once an OSError traceback ("No space left on device").
    for args in (["invoke", fixture("remote_provider.py"), "chat"], ["list", "/"]):
        result = _shell("{cli} >/dev/full", *args)
        assert result.code == 1, result.output
        assert (
            result.err == "aog-plugins: error: cannot write the output: No space left on device\n"
        )


def test_closed_stderr_keeps_errors_out_of_stdout() -> None:
    # print(file=sys.stderr) with stderr closed writes to stdout: the error was mixed into
    # the data a pipe reads.
    result = _shell("{cli} 2>&-", "inspect", "/nonexistent/plugin")
    assert result.code == 1
    assert result.out == ""


def test_closed_stdout_discards_the_answer_without_a_traceback() -> None:
    # invoke once died of AttributeError ('NoneType' object has no attribute 'buffer').
    result = _shell("{cli} >&-", "invoke", fixture("remote_provider.py"), "chat")
    assert result.code == 0, result.err
    assert result.err == ""


def test_a_file_name_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    # With a strict stdout (a UTF-8 locale other than C.UTF-8), the byte 0xff of a plugin
    # directory's name was a UnicodeEncodeError traceback.
    plugins = Layout(tmp_path)
    plugins.add("\udcffalpha", name="alpha")
    env = {"PYTHONIOENCODING": "utf-8:strict"}
    result = cli("list", str(tmp_path), env=env)
    assert result.code == 0, result.output
    assert f"{tmp_path}/\\udcffalpha/" in result.out


def test_run_ends_with_0_on_ctrl_c_and_its_help_and_the_readme_say_so(
    start_cli: Callable[..., Running], tmp_path: Path
) -> None:
    # run --help once said "Ctrl-C ... exits 0" above an exit-code table saying 130.
    running = start_cli("run", str(tmp_path))
    assert running.proc.stdout is not None
    assert "supervising 0 plugin(s)" in running.proc.stdout.readline()
    result = running.interrupt()
    assert result.code == 0, result.output
    assert "all plugins stopped" in result.out
    codes = " ".join(cli("run", "--help").out.split("exit codes:")[1].split())
    assert "0 success; for run, also its end by Ctrl-C or SIGTERM" in codes
    assert "130 interrupted by Ctrl-C (SIGINT); the plugin has been stopped (run exits 0" in codes
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    assert "| 0 | success; for `run`, also its end by Ctrl-C or SIGTERM" in table
    assert "(`run` exits 0 instead) |" in table
