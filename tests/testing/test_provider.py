"""aog_provider: a real Python provider process from plain callables, serving a host."""

from __future__ import annotations

import pytest

from aog_plugins.errors import ConfigurationError
from aog_plugins.testing import PluginHarness
from tests.testing.conftest import run_inner

PROVIDER_SUITE = """
import json

import pytest

from aog_plugins.errors import ConfigurationError, PluginError
from aog_plugins.testing import crash, fail_next_start, wait_for_state
from aog_plugins import RestartPolicy


def chat(request):
    return {"echo": json.loads(request)}


def fail(request):
    raise PluginError(4321, "no such model")


def chat_words(request):
    for word in json.loads(request)["text"].split():
        yield {"word": word}


def host_transcript(client, text):
    # The host under test: streams a chat and joins the words.
    body = json.dumps({"text": text}).encode()
    chunks = client.invoke_service_stream("chat", body)
    return " ".join(json.loads(c.data)["word"] for c in chunks if c.data)


def test_unary_stream_and_failure(aog_provider):
    plugin = aog_provider(services={"chat": chat, "fail": fail}, streams={"chat": chat_words})
    client = plugin.client
    assert json.loads(client.invoke_service("chat", b'{"q": 1}')) == {"echo": {"q": 1}}
    assert host_transcript(client, "one two three") == "one two three"
    with pytest.raises(PluginError) as failed:
        client.invoke_service("fail", b"{}")
    assert failed.value.code == 4321
    manifest = client.get_manifest()
    assert manifest.provider.type == "local"
    assert manifest.service("chat").is_streaming
    assert not manifest.service("fail").is_streaming
    assert client.check_engine() is True


def test_remote_with_auto_mtls(aog_provider):
    plugin = aog_provider(services={"chat": chat}, kind="remote", auto_mtls=True)
    assert plugin.handshake.server_cert
    plugin.client.set_auth("apikey", {"api_key": "k"})
    plugin.client.validate_auth()
    assert plugin.client.get_manifest().provider.type == "remote"


def test_restarts_after_a_failed_start(aog_provider):
    policy = RestartPolicy(backoff_base=0.01, jitter=0.0, max_restarts=5)
    plugin = aog_provider(services={"chat": chat}, restart=policy)
    fail_next_start(plugin)
    crash(plugin)
    wait_for_state(plugin, "RUNNING")
    assert json.loads(plugin.client.invoke_service("chat", b"[]")) == {"echo": []}


def test_a_lambda_is_refused(aog_provider):
    with pytest.raises(ConfigurationError, match="module level"):
        aog_provider(services={"chat": lambda request: request})
"""


def test_aog_provider_serves_a_host_under_test(pytester: pytest.Pytester) -> None:
    result = run_inner(pytester, PROVIDER_SUITE)
    result.assert_outcomes(passed=4)


XDIST_SUITE = """
import json

import pytest


def echo(request):
    return request


@pytest.mark.parametrize("n", range(4))
def test_provider(aog_provider, n):
    plugin = aog_provider(services={"echo": echo})
    assert plugin.client.invoke_service("echo", json.dumps(n).encode()) == json.dumps(n).encode()


def test_python_plugin(aog_plugin):
    aog_plugin([PYTHON, LOCAL]).ping()


def test_fails_with_its_plugin_section(aog_provider):
    aog_provider(services={"echo": echo}, name="xdist-failing")
    assert False
"""


def test_under_xdist_with_two_workers(pytester: pytest.Pytester) -> None:
    from tests.testing.conftest import LOCAL_PROVIDER

    result = run_inner(pytester, XDIST_SUITE, "-n", "2", LOCAL=str(LOCAL_PROVIDER))
    result.assert_outcomes(passed=5, failed=1)
    out = result.stdout.str()
    assert "created: 2/2 workers" in out
    assert "aog plugin xdist-failing (pids" in out
    assert "STARTING -> RUNNING: started" in out


def test_services_that_are_not_a_mapping_are_refused() -> None:
    with PluginHarness() as harness:
        with pytest.raises(ConfigurationError, match="services must be a mapping of service"):
            harness.provider([len])  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="streams must be a mapping of service"):
            harness.provider(streams=[len])  # type: ignore[arg-type]
        assert not harness.watches  # nothing was started
