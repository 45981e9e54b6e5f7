"""App protocol version negotiation against Go (go-plugin) and Python plugins."""

from __future__ import annotations

import json

import pytest

from aog_plugins.errors import IncompatibleAppVersionError
from tests.interop.conftest import FAMILY, Family, Target
from tests.process.conftest import LeakCheck

V1_PLUGINS = {
    # go-plugin ServeConfig.VersionedPlugins = {1: ...}
    "go-misbehave-versioned": (FAMILY["go-misbehave"], {"AOG_FIXTURE_MODE": "app-version-1-only"}),
    # go-plugin ServeConfig.Plugins: implied version HandshakeConfig.ProtocolVersion = 1
    "go-local-plain": (FAMILY["go-local"], {}),
    "py-local": (FAMILY["py-local"], {}),
}


@pytest.mark.parametrize(("family", "env"), V1_PLUGINS.values(), ids=V1_PLUGINS.keys())
def test_v1_plugin_negotiates_down_and_refuses_v2_only(
    family: Family, env: dict[str, str], leak_check: LeakCheck
) -> None:
    target = Target(family, "unix", False)
    with target.launch(leak_check, env=env, versions=[2, 1]) as plugin:
        assert plugin.handshake.app_version == 1
        plugin.client.get_manifest(timeout=30)
    with pytest.raises(IncompatibleAppVersionError) as refused:
        target.launch(leak_check, env=env, versions=[2])
    # A v1 plugin falls back to its lowest version; the host must reject it (go-plugin too).
    assert "the plugin speaks version 1" in str(refused.value)
    assert refused.value.line.split("|")[:2] == ["1", "1"]


@pytest.mark.parametrize(("offered", "expected"), [([2, 1], 2), ([1], 1), ([1, 2, 3], 2)])
def test_go_plugin_with_two_versions_picks_the_highest_common(
    offered: list[int], expected: int, leak_check: LeakCheck
) -> None:
    target = Target(FAMILY["go-misbehave"], "unix", False)
    env = {"AOG_FIXTURE_MODE": "app-versions-1-2"}
    with target.launch(leak_check, env=env, versions=offered) as plugin:
        assert plugin.handshake.app_version == expected
        echo = json.loads(plugin.client.invoke_service("echo", b"v", timeout=30))
        assert echo["app_version"] == expected  # the servicer set of that version answers
