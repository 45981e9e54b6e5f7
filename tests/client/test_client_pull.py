"""pull_model against the Python and Go fixture providers (real processes): which RPC it
uses, the fallback to PullModel when a plugin lacks PullModelStream, and the code of an
``{"error": ...}`` progress item."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from aog_plugins import Plugin, RestartPolicy, launch
from aog_plugins.errors import PluginError
from aog_plugins.types import ProgressResponse, PullModelRequest
from tests.gofixtures.conftest import go_bins
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.support.gobuild import GoBinaries

__all__ = ["go_bins", "leak_check"]

PULL_ERROR = "pull model manifest: file does not exist"  # both fixtures' error-item text
MODEL_PULL_FAILED = 3001


def _python(leak_check: LeakCheck, **env: str) -> Plugin:
    return launch(
        plugin_cmd("local_provider.py"),
        restart=RestartPolicy.never(),
        extra_env={**leak_check.env, **env},
    )


def _go(go_bins: GoBinaries, leak_check: LeakCheck, **env: str) -> Plugin:
    return launch(
        str(go_bins.aog_provider),
        restart=RestartPolicy.never(),
        extra_env={**leak_check.env, "AOG_FIXTURE_KIND": "local", **env},
    )


@pytest.fixture
def python_local(leak_check: LeakCheck) -> Iterator[Plugin]:
    with _python(leak_check) as plugin:
        yield plugin


def _pulled_by(plugin: Plugin) -> dict[str, str]:
    state = json.loads(plugin.client.invoke_service("state", b"{}", timeout=10))
    pulled: dict[str, str] = state["pulled_by"]
    return pulled


def test_without_a_callback_pull_model_is_the_unary_rpc(python_local: Plugin) -> None:
    client = python_local.client
    assert client.pull_model(PullModelRequest(model="quiet:1b"), timeout=30).status == "success"
    seen: list[ProgressResponse] = []
    client.pull_model(PullModelRequest(model="loud:1b"), seen.append, timeout=30)
    assert len(seen) > 1
    assert _pulled_by(python_local) == {"quiet:1b": "PullModel", "loud:1b": "PullModelStream"}


def test_a_provider_without_the_stream_falls_back_to_pull_model(leak_check: LeakCheck) -> None:
    with _python(leak_check, AOG_FIXTURE_NO_PULL_STREAM="1") as plugin:
        seen: list[ProgressResponse] = []
        last = plugin.client.pull_model(PullModelRequest(model="m:1b"), seen.append, timeout=30)
        assert last.status == "success"
        assert seen == [last]  # the callback sees PullModel's answer once
        assert _pulled_by(plugin) == {"m:1b": "PullModel"}
        # The stream itself still reports what the plugin said.
        with pytest.raises(PluginError, match="NotImplementedError") as info:
            list(plugin.client.pull_model_stream(PullModelRequest(model="m:1b"), timeout=30))
        assert info.value.code == 11


def test_error_item_is_code_3001_with_the_plugins_text(python_local: Plugin) -> None:
    client = python_local.client
    with pytest.raises(PluginError) as info:
        list(client.pull_model_stream(PullModelRequest(model="error-item-1"), timeout=30))
    assert (info.value.code, info.value.message) == (MODEL_PULL_FAILED, PULL_ERROR)
    seen: list[ProgressResponse] = []
    with pytest.raises(PluginError) as info:
        client.pull_model(PullModelRequest(model="error-item-2"), seen.append, timeout=30)
    assert (info.value.code, info.value.message) == (MODEL_PULL_FAILED, PULL_ERROR)
    assert [s.status for s in seen] == ["pulling manifest"]  # no fallback after progress


def test_a_real_failure_is_not_a_reason_to_fall_back(python_local: Plugin) -> None:
    with pytest.raises(PluginError) as info:
        python_local.client.pull_model(PullModelRequest(model="missing-x"), print, timeout=30)
    assert info.value.code == 3000
    assert _pulled_by(python_local) == {}  # PullModel was never called


@pytest.mark.parametrize("mode", ["unimplemented", "sdk-default", "empty"])
def test_go_plugin_without_the_stream_falls_back(
    go_bins: GoBinaries, leak_check: LeakCheck, mode: str
) -> None:
    with _go(go_bins, leak_check, AOG_FIXTURE_PULL_STREAM=mode) as plugin:
        client = plugin.client
        seen: list[ProgressResponse] = []
        last = client.pull_model(PullModelRequest(model="go-a:1b"), seen.append, timeout=30)
        assert last.status == "success"
        assert seen == [last]
        assert client.pull_model(PullModelRequest(model="go-b:1b"), timeout=30).status == "success"
        names = {m.name for m in client.list_models(timeout=30).models}
        assert {"go-a:1b", "go-b:1b"} <= names


def test_go_plugin_stream_progress_and_error_item(
    go_bins: GoBinaries, leak_check: LeakCheck
) -> None:
    with _go(go_bins, leak_check) as plugin:
        client = plugin.client
        seen: list[ProgressResponse] = []
        last = client.pull_model(PullModelRequest(model="go-c:1b"), seen.append, timeout=30)
        assert (seen[0].status, last.status) == ("pulling manifest", "success")
        with pytest.raises(PluginError) as info:
            list(client.pull_model_stream(PullModelRequest(model="error-item-go"), timeout=30))
        assert (info.value.code, info.value.message) == (MODEL_PULL_FAILED, PULL_ERROR)
