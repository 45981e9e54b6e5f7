"""``inspect`` and ``invoke`` given a plugin directory (plugin.yaml beside the executable,
as AOG deploys a plugin), and ``invoke`` given a plugins directory plus a service name
(issue 11): real CLI subprocesses over AOG-layout directories generated per test."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import cli, fixture
from tests.manager.conftest import Layout, manifest_doc


@pytest.fixture
def plugins(tmp_path: Path) -> Layout:
    root = tmp_path / "plugins"
    root.mkdir()
    return Layout(root)


def test_inspect_a_plugin_directory(plugins: Layout, tmp_path: Path) -> None:
    plugins.add("alpha", services=[("chat", "chat"), ("embed", "embed")], version="2.1.0")
    result = cli("inspect", "plugins/alpha", "--json", cwd=tmp_path)  # a relative path
    assert result.code == 0, result.output
    doc = json.loads(result.out)
    assert doc["plugin_dir"] == str(plugins.root / "alpha")
    assert doc["executable"] == str(plugins.exe("alpha"))
    assert doc["manifest"]["provider"]["name"] == "alpha"
    assert [s["service_name"] for s in doc["manifest"]["services"]] == ["chat", "embed"]
    text = cli("inspect", str(plugins.root / "alpha"))
    assert text.code == 0, text.output
    assert f"plugin dir       {plugins.root / 'alpha'}" in text.out


def test_invoke_a_plugin_directory_runs_it_in_that_directory(
    plugins: Layout, tmp_path: Path
) -> None:
    plugins.add("alpha")
    result = cli("invoke", "plugins/alpha", "chat", cwd=tmp_path)
    assert result.code == 0, result.output
    reply = json.loads(result.out)
    assert reply["name"] == "alpha"
    assert reply["cwd"] == str(plugins.root / "alpha")


def test_invoke_a_plugins_directory_routes_to_the_plugin_serving_the_service(
    plugins: Layout,
) -> None:
    plugins.add("alpha", services=[("chat", "chat")])
    plugins.add("beta", services=[("embed", "embed")])
    plugins.add("broken", exe_mode=0o644, services=[("embed", "embed")])
    for service, name in (("embed", "beta"), ("chat", "alpha")):
        result = cli("invoke", str(plugins.root), service, "--data", '{"x": 1}')
        assert result.code == 0, result.output
        reply = json.loads(result.out)
        assert (reply["name"], reply["service"]) == (name, service)
        assert reply["cwd"] == str(plugins.root / name)


def test_unknown_service_lists_the_services_available(plugins: Layout) -> None:
    plugins.add("alpha", services=[("chat", "chat")])
    plugins.add("beta", services=[("embed", "embed"), ("chat", "chat")], version="2.0.0")
    plugins.add("broken", exe_mode=0o644)
    result = cli("invoke", str(plugins.root), "rerank")
    assert result.code == 2, result.output
    assert f"no plugin in {plugins.root} serves 'rerank'" in result.err
    assert "services available: chat (alpha, beta), embed (beta)" in result.err
    assert "broken plugins not considered: broken" in result.err
    assert "Traceback" not in result.err
    assert result.err.count("\n") == 1  # one short line


def test_ambiguous_service_names_the_plugins_and_how_to_pick(plugins: Layout) -> None:
    plugins.add("alpha")
    plugins.add("gamma")
    result = cli("invoke", str(plugins.root), "chat")
    assert result.code == 2, result.output
    assert "service 'chat' is served by 2 plugins" in result.err
    assert "(alpha, gamma): pick one with --plugin NAME" in result.err
    picked = cli("invoke", str(plugins.root), "chat", "--plugin", "gamma")
    assert picked.code == 0, picked.output
    assert json.loads(picked.out)["name"] == "gamma"


def test_plugin_option_errors(plugins: Layout) -> None:
    plugins.add("alpha")
    plugins.add("broken", exe_mode=0o644)
    root = str(plugins.root)
    unknown = cli("invoke", root, "chat", "--plugin", "nope")
    assert unknown.code == 2, unknown.output
    assert "no plugin named 'nope'" in unknown.err
    assert "(plugins: alpha, broken)" in unknown.err
    wrong = cli("invoke", root, "embed", "--plugin", "alpha")
    assert wrong.code == 2, wrong.output
    assert "plugin 'alpha' does not serve 'embed' (its services: chat)" in wrong.err
    broken = cli("invoke", root, "chat", "--plugin", "broken")
    assert broken.code == 1, broken.output
    assert "chmod +x" in broken.err
    not_a_dir = cli("invoke", str(plugins.root / "alpha"), "chat", "--plugin", "alpha")
    assert not_a_dir.code == 2, not_a_dir.output
    assert "--plugin picks a plugin of a plugins directory" in not_a_dir.err
    plugin_arg = cli("invoke", root, "chat", "--plugin-arg", "x")
    assert plugin_arg.code == 2, plugin_arg.output
    assert "--plugin-arg is for a plugin executable" in plugin_arg.err


def test_inspect_refuses_a_directory_without_a_manifest(plugins: Layout) -> None:
    plugins.add("alpha")
    result = cli("inspect", str(plugins.root))
    assert result.code == 2, result.output
    assert "is a directory without a plugin manifest" in result.err
    assert f"'aog-plugins list {plugins.root}'" in result.err


def test_a_plugin_directory_without_this_platform(plugins: Layout) -> None:
    directory = plugins.add("alpha")
    doc = manifest_doc("alpha")
    doc["platforms"] = {"plan9_mips": {"executable": "bin/alpha"}}
    plugins.write_manifest(directory, doc)
    for command in (["inspect", str(directory)], ["invoke", str(directory), "chat"]):
        result = cli(*command)
        assert result.code == 2, result.output
        assert "has no executable for this machine" in result.err
        assert "available: plan9_mips" in result.err


def test_the_copied_example_runs_without_a_python3_that_has_aog_plugins(tmp_path: Path) -> None:
    # What a pip install gives: plugin.py without its execute bit, and no python3 on PATH
    # that can import aog_plugins. The copy's launcher names this interpreter instead.
    copy = [sys.executable, "-m", "aog_plugins.examples", "--copy-to", str(tmp_path / "plugins")]
    copied = cli(command=copy)
    assert copied.code == 0, copied.output
    directory = Path(copied.out.strip())
    assert directory == tmp_path / "plugins" / "echo"
    assert not os.access(directory / "plugin.py", os.X_OK)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    result = cli("invoke", str(directory.parent), "chat", "--data", '{"a": 1}', env=env)
    assert result.code == 0, result.output
    assert json.loads(result.out) == {"a": 1}


@pytest.mark.parametrize("manifest_name", ["plugin.yaml", "plugin.yml", "plugin.json"])
def test_a_manifest_file_instead_of_a_directory_says_which_directory(
    plugins: Layout, manifest_name: str
) -> None:
    # Once "cannot execute .../plugin.yaml: chmod +x" (inspect, invoke) and "does not
    # exist or is not a directory: create it" (list, run).
    directory = plugins.add("alpha", manifest_name=manifest_name)
    manifest = str(directory / manifest_name)
    for command in (["inspect", manifest], ["invoke", manifest, "chat"]):
        result = cli(*command)
        assert result.code == 2, result.output
        assert result.err == (
            f"aog-plugins: error: {manifest} is a plugin's manifest, not the plugin: "
            f"pass its directory, {directory}\n"
        )
    for command in (["list", manifest], ["run", manifest]):
        result = cli(*command)
        assert result.code == 2, result.output
        assert result.err == (
            f"aog-plugins: error: {manifest} is a plugin's manifest, not a plugins directory: "
            f"pass the directory that holds one folder per plugin (here {plugins.root})\n"
        )
        assert result.out == ""


def test_one_plugins_directory_for_list_or_run_says_which_directory(plugins: Layout) -> None:
    # list printed "no plugins in ..." and exited 0; run watched a directory with none.
    directory = plugins.add("alpha")
    for command in ("list", "run"):
        result = cli(command, str(directory))
        assert result.code == 2, result.output
        assert result.err == (
            f"aog-plugins: error: {directory} is one plugin's directory (it has a manifest), "
            f"not a plugins directory: pass the directory that holds it, {plugins.root} (or "
            f"'aog-plugins inspect {directory}' for this plugin alone)\n"
        )
        assert result.out == ""


def test_a_manifests_control_characters_reach_no_terminal(plugins: Layout) -> None:
    # The error that lists the directory's services and inspect's table once wrote a
    # manifest's escapes out as they were.
    hostile = "\x1b]0;PWNED\x07\x1b[2J"
    plugins.add("alpha", services=[(f"chat{hostile}", "chat")])
    unknown = cli("invoke", str(plugins.root), "rerank")
    assert unknown.code == 2, unknown.output
    assert "services available: chat\\x1b]0;PWNED\\x07\\x1b[2J (alpha)" in unknown.err
    env = {"AOG_FIXTURE_JSON": json.dumps(manifest_doc(f"x{hostile}", version=hostile))}
    shown = cli("inspect", fixture("hostile_replies.py"), env=env)
    assert shown.code == 0, shown.output
    assert "provider         x\\x1b]0;PWNED\\x07\\x1b[2J \\x1b]0;PWNED" in shown.out
    for result in (unknown, shown):
        assert "\x1b" not in result.output
        assert "\x07" not in result.output
