"""AsyncGRPCProviderClient against a plugin whose replies are hostile (fixtures/plugins/
hostile_replies.py, a real process): the same typed errors as the sync client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from aog_plugins import RestartPolicy
from aog_plugins.aio import AsyncGRPCProviderClient, AsyncPlugin, launch
from aog_plugins.errors import PayloadError, PluginError
from aog_plugins.types import PullModelRequest
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd

PULL = PullModelRequest(model="m:1b")


async def _pull_stream(client: AsyncGRPCProviderClient) -> object:
    return [item async for item in await client.pull_model_stream(PULL, timeout=30)]


JSON_METHODS: dict[str, Callable[[AsyncGRPCProviderClient], Awaitable[object]]] = {
    "manifest JSON": lambda c: c.get_manifest(timeout=30),
    "manifest JSON (support model list)": lambda c: c.get_support_model_list(timeout=30),
    "engine config JSON": lambda c: c.get_config(timeout=30),
    "model list JSON": lambda c: c.list_models(timeout=30),
    "running model list JSON": lambda c: c.get_running_models(timeout=30),
    "version JSON": lambda c: c.get_version(timeout=30),
    "pull response JSON": lambda c: c.pull_model(PULL, timeout=30),
    "pull progress JSON": _pull_stream,
    "pull progress JSON (progress callback)": lambda c: c.pull_model(
        PULL, lambda _: None, timeout=30
    ),
}
"""Every client method that decodes a JSON reply, by the part its error names."""


async def hostile(leak_check: LeakCheck, **env: str) -> AsyncPlugin:
    return await launch(
        plugin_cmd("hostile_replies.py"),
        restart=RestartPolicy.never(),
        extra_env={**leak_check.env, **env},
    )


async def _payload_errors(client: AsyncGRPCProviderClient, why: str) -> None:
    for what, call in JSON_METHODS.items():
        part = what.partition(" (")[0]
        with pytest.raises(PayloadError, match=f"the plugin's {part} is not valid: .*{why}"):
            await call(client)


def test_a_number_too_long_for_python_is_a_payload_error(leak_check: LeakCheck) -> None:
    async def main() -> None:
        document = '{"total": ' + "9" * 5000 + "}"
        async with await hostile(leak_check, AOG_FIXTURE_JSON=document) as plugin:
            await _payload_errors(plugin.client, "integer too long to read")
            assert await plugin.client.invoke_service("chat", b"{}") == b"ok"

    run(main())


@pytest.mark.parametrize("depth", [600, 990])
def test_a_deeply_nested_unknown_key_is_a_payload_error(leak_check: LeakCheck, depth: int) -> None:
    async def main() -> None:
        document = '{"note": ' + "[" * depth + "]" * depth + "}"
        async with await hostile(leak_check, AOG_FIXTURE_JSON=document) as plugin:
            errors: list[str] = []
            for call in JSON_METHODS.values():
                try:
                    await call(plugin.client)
                except PayloadError as exc:
                    errors.append(str(exc))
            assert all("nested too deeply" in error for error in errors), errors
            assert await plugin.client.invoke_service("chat", b"{}") == b"ok"

    run(main())


@pytest.mark.parametrize(
    ("key", "item", "why"),
    [
        ("AOG_FIXTURE_JSON", "[" * 50_000, "nested too deeply"),
        ("AOG_FIXTURE_JSON_HEX", '{"error": "boom"}'.encode("utf-16-le").hex(), "invalid JSON"),
    ],
    ids=["deep", "utf-16"],
)
def test_a_progress_item_is_read_as_go_reads_it(
    leak_check: LeakCheck, key: str, item: str, why: str
) -> None:
    async def main() -> None:
        async with await hostile(leak_check, **{key: item}) as plugin:
            for what in ("pull progress JSON", "pull progress JSON (progress callback)"):
                with pytest.raises(PayloadError, match=f"progress JSON is not valid: .*{why}"):
                    await JSON_METHODS[what](plugin.client)

    run(main())


def test_a_failure_message_cannot_drive_the_terminal(leak_check: LeakCheck) -> None:
    async def main() -> None:
        env = {"AOG_FIXTURE_CODE": "4000", "AOG_FIXTURE_MESSAGE": "\x1b[2J\rforged\n" * 300}
        async with await hostile(leak_check, **env) as plugin:
            for call in (
                lambda c: c.health_check(timeout=30),
                lambda c: c.invoke_service("chat", b"{}", timeout=30),
                JSON_METHODS["model list JSON"],
                _pull_stream,
            ):
                with pytest.raises(PluginError) as info:
                    await call(plugin.client)
                assert info.value.message == env["AOG_FIXTURE_MESSAGE"]
                shown = str(info.value)
                assert shown.startswith("plugin error 4000: \\x1b[2J\\rforged\\n\\x1b[2J")
                assert shown.endswith("... (3600 characters in all)")
                assert shown.isprintable()

    run(main())


def test_a_manifest_that_cannot_be_had_is_asked_for_once_per_process(
    leak_check: LeakCheck, tmp_path: Path
) -> None:
    # As in the sync client: a manifest that failed was fetched again before every call.
    calls = tmp_path / "calls"

    async def main() -> None:
        extra = {"AOG_FIXTURE_JSON": "[]", "AOG_FIXTURE_CALLS": str(calls)}
        async with await hostile(leak_check, **extra) as plugin:
            for _ in range(3):
                await plugin.client.invoke_service("chat", b"{}")
                stream = await plugin.client.invoke_service_stream("chat", b"{}")
                [_ async for _ in stream]
        assert calls.read_text().splitlines() == ["GetManifest"]

    run(main())
