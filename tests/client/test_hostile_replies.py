"""GRPCProviderClient against a plugin whose replies are hostile (fixtures/plugins/
hostile_replies.py, a real process): whatever a reply holds, a method raises a typed
error that says what was wrong, never a bare ValueError or RecursionError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from aog_plugins import GRPCProviderClient, Plugin, RestartPolicy, launch
from aog_plugins.errors import PayloadError, PluginCallError, PluginError
from aog_plugins.types import PullModelRequest
from tests.process.conftest import LeakCheck, plugin_cmd

PULL = PullModelRequest(model="m:1b")

JSON_METHODS: dict[str, Callable[[GRPCProviderClient], object]] = {
    "manifest JSON": lambda c: c.get_manifest(timeout=30),
    "manifest JSON (support model list)": lambda c: c.get_support_model_list(timeout=30),
    "engine config JSON": lambda c: c.get_config(timeout=30),
    "model list JSON": lambda c: c.list_models(timeout=30),
    "running model list JSON": lambda c: c.get_running_models(timeout=30),
    "version JSON": lambda c: c.get_version(timeout=30),
    "pull response JSON": lambda c: c.pull_model(PULL, timeout=30),
    "pull progress JSON": lambda c: list(c.pull_model_stream(PULL, timeout=30)),
    "pull progress JSON (progress callback)": lambda c: c.pull_model(
        PULL, lambda _: None, timeout=30
    ),
}
"""Every client method that decodes a JSON reply, by the part its error names."""


def hostile(leak_check: LeakCheck, **env: str) -> Plugin:
    return launch(
        plugin_cmd("hostile_replies.py"),
        restart=RestartPolicy.never(),
        extra_env={**leak_check.env, **env},
    )


def _payload_errors(client: GRPCProviderClient, why: str) -> None:
    for what, call in JSON_METHODS.items():
        part = what.partition(" (")[0]
        with pytest.raises(PayloadError, match=f"the plugin's {part} is not valid: .*{why}"):
            call(client)


def deep(depth: int) -> str:
    """A document whose unknown key ``note`` holds arrays ``depth`` levels deep."""
    return '{"note": ' + "[" * depth + "]" * depth + "}"


def test_a_number_too_long_for_python_is_a_payload_error(leak_check: LeakCheck) -> None:
    # int() refuses more than 4300 digits with a ValueError; Go fails such a field too.
    with hostile(leak_check, AOG_FIXTURE_JSON='{"total": ' + "9" * 5000 + "}") as plugin:
        _payload_errors(plugin.client, "integer too long to read")
        # An unreadable manifest only loses its per-service timeout: the call is made.
        assert plugin.client.invoke_service("chat", b"{}") == b"ok"


@pytest.mark.parametrize("depth", [600, 990])
def test_a_deeply_nested_unknown_key_is_a_payload_error(leak_check: LeakCheck, depth: int) -> None:
    # Unknown keys are kept in ``extra``; copying a value the JSON parser could still read
    # recursed deeper than the parser (twice per level up to Python 3.11) and raised a
    # bare RecursionError. Where the stack suffices, the value is simply kept.
    with hostile(leak_check, AOG_FIXTURE_JSON=deep(depth)) as plugin:
        errors: list[str] = []
        for call in JSON_METHODS.values():
            try:
                call(plugin.client)
            except PayloadError as exc:
                errors.append(str(exc))
        assert all("nested too deeply" in error for error in errors), errors
        assert plugin.client.invoke_service("chat", b"{}") == b"ok"


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ("[" * 50_000, "nested too deeply"),  # the parser's RecursionError
        ('{"error": "boom"}'.encode("utf-16-le").hex(), "invalid JSON"),  # Go refuses it too
    ],
    ids=["deep", "utf-16"],
)
def test_a_progress_item_is_read_as_go_reads_it(leak_check: LeakCheck, item: str, why: str) -> None:
    # The {"error": ...} check parsed each item with plain json.loads first: a deep one
    # raised a bare RecursionError, a UTF-16 one (which json.loads detects) was an error.
    key = "AOG_FIXTURE_JSON" if item.startswith("[") else "AOG_FIXTURE_JSON_HEX"
    with hostile(leak_check, **{key: item}) as plugin:
        for what in ("pull progress JSON", "pull progress JSON (progress callback)"):
            with pytest.raises(PayloadError, match=f"pull progress JSON is not valid: .*{why}"):
                JSON_METHODS[what](plugin.client)


FORGED = "\x1b]0;PWNED\x07\x1b[2K\rplugin other ERROR: forged\nline 2 \x9b2J\u2028end"
FORGED_SHOWN = "\\x1b]0;PWNED\\x07\\x1b[2K\\rplugin other ERROR: forged\\nline 2 \\x9b2J\\u2028end"
CODED_METHODS: dict[str, Callable[[GRPCProviderClient], object]] = {
    "get_manifest": lambda c: c.get_manifest(timeout=30),
    "health_check": lambda c: c.health_check(timeout=30),
    "invoke_service": lambda c: c.invoke_service("chat", b"{}", timeout=30),
    "invoke_service_stream": lambda c: list(c.invoke_service_stream("chat", b"{}", timeout=30)),
    "list_models": lambda c: c.list_models(timeout=30),
    "pull_model_stream": JSON_METHODS["pull progress JSON"],
}


def test_a_failure_message_cannot_drive_the_terminal(leak_check: LeakCheck) -> None:
    # The AOG message is the plugin's text: shown (str, so the CLI and logs) with its
    # control characters escaped and cut to a readable size; .message keeps it whole.
    message = FORGED + "x" * 100_000
    env = {"AOG_FIXTURE_CODE": "4000", "AOG_FIXTURE_MESSAGE": message}
    with hostile(leak_check, **env) as plugin:
        for name, call in CODED_METHODS.items():
            with pytest.raises(PluginError) as info:
                call(plugin.client)
            assert (info.value.code, info.value.message) == (4000, message), name
            shown = str(info.value)
            assert shown.startswith(f"plugin error 4000: {FORGED_SHOWN}xxx"), name
            assert shown.endswith(f"... ({len(message)} characters in all)"), name
            assert shown.isprintable(), name
            assert len(shown) < 4096, name


def test_a_grpc_status_text_cannot_drive_the_terminal(leak_check: LeakCheck) -> None:
    with (
        hostile(leak_check, AOG_FIXTURE_ABORT=FORGED) as plugin,
        pytest.raises(PluginCallError) as info,
    ):
        plugin.client.invoke_service("chat", b"{}", timeout=30)
    assert info.value.code == "INTERNAL"
    assert str(info.value) == f"InvokeService failed: INTERNAL: {FORGED_SHOWN}"


def test_a_lone_surrogate_escape_decodes_to_u_fffd_as_in_go(leak_check: LeakCheck) -> None:
    # json.loads keeps "\ud800" as a lone surrogate, which no text encoding can write:
    # printing such a provider name raised UnicodeEncodeError (the CLI's inspect too).
    # Go's decoder gives U+FFFD; a proper pair is one character in both.
    document = (
        '{"version": "\\ud800x", "provider": {"name": "a\\uDFFFb"}, "services": [{"service_name":'
        ' "chat", "support_models": ["\\ud83d\\ude00", "\\ud800\\u0041"]}], "note": {"\\udc80":'
        ' ["\\udc80"]}}'
    )
    with hostile(leak_check, AOG_FIXTURE_JSON=document) as plugin:
        manifest = plugin.client.get_manifest(timeout=30)
    assert manifest.version == "\ufffdx"
    assert manifest.provider.name == "a\ufffdb"
    assert manifest.services[0].support_models == ["\U0001f600", "\ufffdA"]
    assert manifest.extra == {"note": {"\ufffd": ["\ufffd"]}}


@pytest.mark.parametrize(
    "env",
    [{"AOG_FIXTURE_JSON": "[]"}, {"AOG_FIXTURE_CODE": "4001", "AOG_FIXTURE_MESSAGE": "no"}],
    ids=["undecodable", "aog-failure"],
)
def test_a_manifest_that_cannot_be_had_is_asked_for_once_per_process(
    leak_check: LeakCheck, tmp_path: Path, env: dict[str, str]
) -> None:
    # invoke_service* without a timeout read the manifest's per-service rule; one that
    # failed was fetched again before every call (a round trip each, up to 60 s each).
    calls = tmp_path / "calls"
    plugin = hostile(leak_check, AOG_FIXTURE_CALLS=str(calls), **env)
    try:
        for _ in range(3):
            with contextlib.suppress(PluginError):  # the fixture's code fails these too
                plugin.client.invoke_service("chat", b"{}")
            with contextlib.suppress(PluginError):
                list(plugin.client.invoke_service_stream("chat", b"{}"))
        assert calls.read_text().splitlines() == ["GetManifest"]
    finally:
        plugin.kill()
