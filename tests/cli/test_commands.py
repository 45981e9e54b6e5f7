"""``inspect`` and ``invoke`` as real subprocesses against real fixture plugins: output and
exit codes, for success and for every kind of failure (issue 9, item 15)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Running, cli, fixture

REMOTE = fixture("remote_provider.py")
ECHO = fixture("echo_plugin.py")  # implements only part of the provider API
MISBEHAVE = fixture("misbehave.py")
RAW_HCLOG = '"@level"'


def _clean(output: str) -> None:
    assert "Traceback" not in output
    assert RAW_HCLOG not in output


# ---- inspect --------------------------------------------------------------------------


def test_inspect_shows_handshake_health_and_services() -> None:
    result = cli("inspect", REMOTE)
    assert result.code == 0, result.err
    assert "health           SERVING" in result.out
    assert "remote-fixture 0.1.0 (remote)" in result.out
    assert "chat         stream  chat" in result.out
    assert "n/a (code 11: not a local plugin)" in result.out  # GetVersion's AOG error
    _clean(result.output)


def test_inspect_json_is_one_document() -> None:
    result = cli("inspect", REMOTE, "--auto-mtls", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["handshake"]["auto_mtls"] is True
    assert doc["manifest"]["provider"]["name"] == "remote-fixture"
    assert doc["operate_status"] == 0


def test_inspect_partial_plugin_says_not_implemented_without_tracebacks() -> None:
    # The echo fixture implements GetManifest, HealthCheck and the invoke RPCs only; a
    # grpcio plugin logs a traceback for each RPC it lacks.
    result = cli("inspect", ECHO)
    assert result.code == 0, result.err
    assert "operate status   not implemented" in result.out
    assert "engine version   not implemented" in result.out
    assert "echo 0.1.0 (remote)" in result.out
    _clean(result.output)


def test_inspect_plugin_with_no_provider_rpcs_at_all() -> None:
    result = cli("inspect", MISBEHAVE, "--plugin-arg", "no-stdio", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    for key in ("manifest", "provider_health", "operate_status", "engine_version"):
        assert doc[key] == "not implemented"
    _clean(result.output)


def test_debug_log_level_shows_the_plugins_traceback() -> None:
    result = cli("--log-level", "DEBUG", "inspect", ECHO)
    assert result.code == 0
    assert "Traceback" in result.err  # hidden by default, not lost


# ---- invoke ---------------------------------------------------------------------------


def test_invoke_unary_prints_the_answer() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    result = cli("invoke", REMOTE, "chat", "--data", json.dumps(request))
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["choices"][0]["message"]["content"] == "echo: hi"


def test_invoke_stream_prints_each_chunk() -> None:
    result = cli("invoke", REMOTE, "chat", "--stream", "--data", '{"chunks": 2}')
    assert result.code == 0, result.err
    assert [line for line in result.out.splitlines() if line] == [
        'data: {"index": 0, "delta": "tok0"}',
        'data: {"index": 1, "delta": "tok1"}',
        "data: [DONE]",
    ]


def test_invoke_aog_error_code_exits_1_with_the_plugins_message() -> None:
    result = cli("invoke", REMOTE, "fail")
    assert result.code == 1
    assert "plugin error 4001: fail: failing on purpose" in result.err
    assert result.out == ""
    _clean(result.output)


def test_invoke_crash_is_reported_short_and_not_restarted() -> None:
    result = cli("invoke", REMOTE, "crash")
    assert result.code == 1
    assert "died during the call (exit code 7" in result.err
    assert "[WARN] crashing on purpose exit_code=7" in result.err  # hclog, decoded
    assert "BACKOFF" not in result.err
    assert "restarting" not in result.err
    _clean(result.output)


def test_invoke_unknown_service_exits_2_listing_the_services() -> None:
    result = cli("invoke", REMOTE, "nope")
    assert result.code == 2
    assert "no service 'nope'" in result.err
    assert "chat, auth" in result.err
    _clean(result.output)


def test_invoke_bad_json_exits_2_before_starting_anything(tmp_path: Path) -> None:
    # The executable does not exist: the JSON error must come first.
    result = cli("invoke", str(tmp_path / "absent"), "chat", "--data", "{bad")
    assert result.code == 2
    assert "--data is not valid JSON" in result.err
    _clean(result.output)


@pytest.mark.parametrize("nested", ["[" * 20000 + "]" * 20000, '{"a":' * 20000 + "1" + "}" * 20000])
def test_invoke_data_nested_too_deeply_exits_2_before_starting(tmp_path: Path, nested: str) -> None:
    # Once a RecursionError traceback (exit 1) from checking the JSON.
    result = cli("invoke", str(tmp_path / "absent"), "chat", "--data", nested)
    assert result.code == 2, result.output
    assert "--data is nested too deeply to check" in result.err
    assert result.err.count("\n") == 1
    _clean(result.output)


NOT_UTF8 = "\udcff"  # how Python shows byte 0xff of argv or the environment


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["--data", f'"{NOT_UTF8}"'], {}, "--data is not valid UTF-8 (it has byte 0xff)"),
        (["--auth", f"api_key={NOT_UTF8}"], {}, "--auth api_key: the value is not valid UTF-8"),
        (["--auth", f"{NOT_UTF8}=v"], {}, "--auth: a credential name is not valid UTF-8"),
        (
            ["--auth-env", "api_key=AOGP_KEY"],
            {"AOGP_KEY": NOT_UTF8},
            "--auth-env api_key: the environment variable AOGP_KEY is not valid UTF-8",
        ),
        (["--auth-type", NOT_UTF8, "--auth", "k=v"], {}, "--auth-type is not valid UTF-8"),
        (["--auth-info", NOT_UTF8], {}, "--auth-info is not valid UTF-8"),
    ],
)
def test_invoke_text_that_is_not_utf8_exits_2_before_starting(
    options: list[str], env: dict[str, str], message: str
) -> None:
    # Once a UnicodeEncodeError traceback (exit 1) when the text was sent to the plugin.
    result = cli("invoke", REMOTE, "chat", *options, env=env)
    assert result.code == 2, result.output
    assert result.err.count("\n") == 1
    assert message in result.err
    assert "UTF-8" in result.err
    _clean(result.output)


def test_invoke_service_name_that_is_not_utf8_exits_2() -> None:
    result = cli("invoke", REMOTE, f"chat{NOT_UTF8}")
    assert result.code == 2, result.output
    assert "the service name 'chat\\udcff' is not valid UTF-8" in result.err
    _clean(result.output)


# ---- start failures (both commands share them) ----------------------------------------


@pytest.mark.parametrize("command", [["inspect"], ["invoke", "--stream"]])
def test_missing_executable_exits_1(command: list[str], tmp_path: Path) -> None:
    path = str(tmp_path / "no-such-plugin")
    args = [*command[:1], path, *(["chat", *command[1:]] if command[0] == "invoke" else [])]
    result = cli(*args)
    assert result.code == 1
    assert "not found" in result.err
    assert path in result.err
    _clean(result.output)


def test_non_executable_file_exits_1(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = cli("inspect", str(plugin))
    assert result.code == 1
    assert "execute" in result.err
    _clean(result.output)


def test_garbage_handshake_exits_1() -> None:
    result = cli("inspect", MISBEHAVE, "--plugin-arg", "garbage-first")
    assert result.code == 1
    assert "not a go-plugin handshake" in result.err
    assert "Starting up, please wait..." in result.err
    _clean(result.output)


def test_start_timeout_exits_1() -> None:
    result = cli("inspect", MISBEHAVE, "--plugin-arg", "never-handshake", "--start-timeout", "1")
    assert result.code == 1
    assert "timeout" in result.err
    _clean(result.output)


def test_plugin_exiting_early_shows_its_stderr() -> None:
    result = cli("invoke", MISBEHAVE, "--plugin-arg", "exit-early", "chat")
    assert result.code == 1
    assert "fatal: cannot open config /etc/nowhere.conf" in result.err
    _clean(result.output)


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        (["inspect", REMOTE], "--start-timeout", "0"),
        (["inspect", REMOTE], "--start-timeout", "inf"),
        (["inspect", REMOTE], "--timeout", "0"),
        (["inspect", REMOTE], "--timeout", "nan"),
        (["invoke", REMOTE, "chat"], "--timeout", "-1"),
        (["invoke", REMOTE, "chat"], "--timeout", "nan"),
        (["invoke", REMOTE, "chat"], "--start-timeout", "inf"),
        (["invoke", REMOTE, "chat"], "--start-timeout", "nan"),
        (["invoke", REMOTE, "chat"], "--start-timeout", "1e12"),  # overflows the clocks
        (["run", "/nonexistent/plugins"], "--idle-timeout", "nan"),
        (["run", "/nonexistent/plugins"], "--idle-timeout", "-1"),
    ],
)
def test_bad_time_options_are_usage_errors_before_anything_starts(
    command: list[str], option: str, value: str
) -> None:
    # Once, 0 and -1 started the plugin then failed with a traceback, inf with an
    # OverflowError "bug", and nan was taken (a start that gave up at once, a run that
    # never stopped an idle plugin).
    result = cli(*command, f"{option}={value}")
    assert result.code == 2, result.output
    last = result.err.splitlines()[-1]
    assert f"error: argument {option}: wants a number of seconds greater than 0" in last
    assert repr(value) in last
    assert result.out == ""
    _clean(result.output)


# ---- credentials (issue 9, item 11: secrets stay out of argv) ---------------------------


def _auth_info(out: str) -> object:
    """The auth info the remote fixture's ``chat`` saw, decoded."""
    return json.loads(json.loads(out)["auth_info"])


def test_auth_from_an_environment_variable_is_not_passed_to_the_plugin(
    start_cli: Callable[..., Running],
) -> None:
    secret = "sk-from-env"
    result = cli(
        "invoke", REMOTE, "chat", "--auth-env", "api_key=AOGP_KEY", env={"AOGP_KEY": secret}
    )
    assert result.code == 0, result.err
    assert _auth_info(result.out) == {"api_key": secret}
    running = start_cli(
        "invoke",
        REMOTE,
        "slow-stream",
        "--stream",
        "--auth-env",
        "api_key=AOGP_KEY",
        env={"AOGP_KEY": secret, "AOGP_OTHER": "kept"},
    )
    environ = running.plugin("remote_provider.py").environ()
    assert running.proc.stdout is not None
    assert running.proc.stdout.readline()  # SetAuth done, streaming
    assert "AOGP_KEY" not in environ
    assert environ["AOGP_OTHER"] == "kept"
    assert running.interrupt().code == 130


def test_auth_from_a_file_reaches_set_auth(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    result = cli("invoke", REMOTE, "auth", "--auth-file", f"api_key={key_file}")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"auth_type": "apikey", "has_key": True, "refreshes": 0}
    result = cli("invoke", REMOTE, "chat", "--auth-file", f"api_key={key_file}")
    assert _auth_info(result.out) == {"api_key": "sk-from-file"}


def test_auth_from_stdin() -> None:
    result = cli(
        "invoke",
        REMOTE,
        "chat",
        "--auth-file",
        "api_key=-",
        "--auth",
        "org=acme",
        stdin="sk-from-stdin\n",
    )
    assert result.code == 0, result.err
    assert _auth_info(result.out) == {"api_key": "sk-from-stdin", "org": "acme"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--auth-env", "api_key=AOGP_UNSET_VAR"], "AOGP_UNSET_VAR is not set"),
        (["--auth-file", "api_key=/nonexistent/key"], "cannot read /nonexistent/key"),
        (["--auth-env", "api_key"], "--auth-env wants KEY=VAR"),
        (["--auth", "api_key=a", "--auth-env", "api_key=HOME"], "'api_key' is given twice"),
        (["--auth-file", "a=-", "--auth-file", "b=-"], "only one credential can come from stdin"),
        # read to the end once: a MemoryError traceback, or the machine out of memory
        (["--auth-file", "api_key=/dev/zero"], "/dev/zero holds more than 1 MiB"),
    ],
)
def test_bad_credential_sources_exit_2_before_starting(options: list[str], message: str) -> None:
    result = cli("invoke", "/nonexistent/plugin", "chat", *options)
    assert result.code == 2
    assert message in result.err
    _clean(result.output)


@pytest.mark.parametrize(
    ("source", "content"),
    [("env", ""), ("file", ""), ("file", "\n"), ("stdin", ""), ("stdin", "\r\n")],
)
def test_an_empty_credential_exits_2_naming_key_and_source(
    source: str, content: str, tmp_path: Path
) -> None:
    # Once sent to SetAuth as "" (exit 0), while --auth api_key= was refused.
    key_file = tmp_path / "key"
    key_file.write_text(content)
    option, where = {
        "env": (["--auth-env", "api_key=AOGP_KEY"], "the environment variable AOGP_KEY"),
        "file": (["--auth-file", f"api_key={key_file}"], f"the file {key_file}"),
        "stdin": (["--auth-file", "api_key=-"], "stdin"),
    }[source]
    result = cli("invoke", REMOTE, "auth", *option, env={"AOGP_KEY": content}, stdin=content)
    assert result.code == 2, result.output
    assert result.err == (
        f"aog-plugins: error: {option[0]} api_key: {where} is empty; it must hold the credential\n"
    )
    assert result.out == ""


def test_a_plugins_multi_line_log_message_cannot_forge_a_line() -> None:
    # An hclog JSON message may carry newlines (a traceback keeps them); its continuation
    # lines used to start at the margin, so "plugin other WARN: forged" looked like a
    # record of another plugin. Now every line at the margin is one of the CLI's own.
    result = cli(
        "inspect",
        fixture("hostile_output.py"),
        "--plugin-arg",
        "escapes",
        "--log-level",
        "DEBUG",
    )
    assert result.code == 1, result.err
    lines = result.err.splitlines()
    assert any("forged" in line for line in lines)
    assert not [line for line in lines if line.startswith("plugin other")], result.err
    assert all(
        line.startswith(("plugin hostile_output.py ", "aog-plugins: error:", "the plugin's", " "))
        for line in lines
    ), result.err


def test_a_plugins_failure_message_cannot_drive_the_terminal() -> None:
    # An AOG failure message is the plugin's text: the error line and inspect's table show
    # its escapes and CRs escaped, on one line.
    env = {
        "AOG_FIXTURE_JSON": '{"services": [{"service_name": "chat"}]}',
        "AOG_FIXTURE_CODE": "4000",
        "AOG_FIXTURE_MESSAGE": "\x1b]0;PWNED\x07\x1b[2K\rforged\nline",
    }
    shown = "\\x1b]0;PWNED\\x07\\x1b[2K\\rforged\\nline"
    result = cli("invoke", fixture("hostile_replies.py"), "chat", env=env)
    assert result.code == 1, result.output
    assert result.err == f"aog-plugins: error: plugin error 4000: {shown}\n"
    result = cli("inspect", fixture("hostile_replies.py"), env=env)
    assert result.code == 0, result.output
    assert f"provider health  n/a (code 4000: {shown})" in result.out
    assert "\x1b" not in result.output
    assert "\r" not in result.output


def test_a_relative_executable_path_is_never_looked_up_on_path(tmp_path: Path) -> None:
    # "./my-plugin" once lost its "./" (pathlib drops it) and was looked up on PATH: not
    # found, or another program of that name (here /bin/true) run instead of this file.
    for name in ("my-plugin", "true"):
        (tmp_path / name).symlink_to(ECHO)
        result = cli("inspect", f"./{name}", "--json", cwd=tmp_path)
        assert result.code == 0, result.output
        assert json.loads(result.out)["executable"] == str(tmp_path / name)
    missing = cli("inspect", "./no-such-plugin", cwd=tmp_path)
    assert missing.code == 1
    assert str(tmp_path / "no-such-plugin") in missing.err
    assert "not on PATH" not in missing.err
