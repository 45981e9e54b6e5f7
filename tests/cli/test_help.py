"""``--help``: plain text, a help line for every option, examples and exit codes everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aog_plugins.cli import COMMANDS, build_parser
from tests.cli.conftest import cli


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_argument_of_every_command_has_a_help_line() -> None:
    parser = build_parser()
    parsers = {"aog-plugins": parser, **_subparsers(parser)}
    assert set(parsers) == {"aog-plugins", *COMMANDS}
    missing = [
        (name, action.dest)
        for name, p in parsers.items()
        for action in p._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_top_level_help_lists_commands_examples_and_exit_codes() -> None:
    result = cli("--help")
    assert result.code == 0, result.err
    assert "\x1b" not in result.out  # plain text, no colours
    for name, command in COMMANDS.items():
        assert name in result.out
        assert command.summary in result.out
    assert "examples:" in result.out
    for code in ("0 ", "1 ", "2 ", "130 ", "143 "):  # 143: SIGTERM, once undocumented
        assert f"\n  {code}" in result.out.split("exit codes:")[1]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_has_each_option_an_example_and_exit_codes(name: str) -> None:
    result = cli(name, "--help")
    assert result.code == 0, result.err
    assert "\x1b" not in result.out
    examples = result.out.split("examples:")[1].split("exit codes:")[0]
    assert f"aog-plugins {name}" in examples
    assert "130" in result.out.split("exit codes:")[1]
    sub = _subparsers(build_parser())[name]
    for action in sub._actions:
        for option in action.option_strings:
            assert option in result.out
        assert (action.help or "").split()[0] in result.out


def test_invoke_help_says_how_to_keep_secrets_out_of_argv() -> None:
    result = cli("invoke", "--help")
    text = " ".join(result.out.split())
    assert "--auth-env KEY=VAR" in text
    assert "--auth-file KEY=PATH" in text
    assert "process list" in text
    assert "stdin" in text


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("inspect",), ("demo", "--bogus"), ("invoke", "./p", "chat", "--x")],
)
def test_usage_errors_exit_2_with_usage_and_no_traceback(args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert "usage: aog-plugins" in result.err
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [("list", ""), ("inspect", ""), ("invoke", "", "chat")])
def test_an_empty_path_is_a_usage_error(args: tuple[str, ...], tmp_path: Path) -> None:
    # Path("") is ".": an unset shell variable listed (or invoked the plugins of) the
    # current directory.
    (tmp_path / "plugin.yaml").write_text("not: a manifest\n")
    result = cli(*args, cwd=tmp_path)
    assert result.code == 2, result.output
    assert "is empty; pass a path" in result.err
    assert "Traceback" not in result.output
