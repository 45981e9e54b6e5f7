"""``aog-plugins demo`` (the plugin manager's demo, issue 11) works from anywhere, also from
a plain install without the test extras, because its example plugin ships inside the
package (issue 9, item 16) and the demo runs a copy of it through a launcher."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Running, cli

ROOT = Path(__file__).resolve().parents[2]

# Imported by sitecustomize in the install test: any import of a test-only dependency fails
# (in the CLI and in the plugin it starts, which inherits PYTHONPATH).
_BLOCK_TEST_EXTRAS = """\
import sys

BLOCKED = {"pytest", "_pytest", "xdist", "pytest_timeout", "grpc_tools", "mypy_protobuf",
           "mypy", "ruff", "tests", "_fixture_path", "_providers"}


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a test-only module; the demo must not need it")
        return None


sys.meta_path.insert(0, _Blocker())
"""


def _check_demo_output(out: str, network: str) -> None:
    assert f"plugins serve over {network} with AutoMTLS" in out
    listed = out.split("1. listed", 1)[1].split("2. first call", 1)[0]
    assert re.search(r"^echo +0\.1\.0 +chat +NOT_STARTED", listed, re.M), listed
    assert """invoke_service('chat') -> {"hello": "aog"}""" in out
    first = re.search(r"echo started on first use, pid (\d+): " + network, out)
    assert first, out
    assert """chunk '{"index": 2}' final=False""" in out
    assert "event: added    echo-2: appeared in the plugins directory" in out
    assert """echo-2 -> {"to": "echo-2"}""" in out
    assert "echo now runs version 0.2.0, pid " in out
    assert f"event: stopped  echo pid {first.group(1)}: replaced by a new build" in out
    assert re.search(r"^echo +0\.2\.0 +chat +RUNNING", out, re.M), out
    assert "echo [INFO] invoke service=chat" in out
    assert "plugin processes still running: none" in out
    if network == "unix":
        assert "socket dirs left: none" in out


@pytest.mark.parametrize("network", ["unix", "tcp"])
def test_demo_from_outside_the_repository(tmp_path: Path, network: str) -> None:
    result = cli("demo", *(["--tcp"] if network == "tcp" else []), cwd=tmp_path)
    assert result.code == 0, result.output
    _check_demo_output(result.out, network)
    assert "Traceback" not in result.output


def test_demo_after_a_plain_install_without_test_extras(tmp_path: Path) -> None:
    # pip install of a copy of the sources (the build writes into its source tree), into
    # a target dir; its console script runs with this interpreter, so the runtime
    # dependencies come from here while the package itself comes only from the install.
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "aog_plugins", source / "aog_plugins", ignore=shutil.ignore_patterns("__pycache__")
    )
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(source),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    shutil.rmtree(source)  # nothing may refer back to the sources
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCK_TEST_EXTRAS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli(
        "demo",
        command=[str(site / "bin" / "aog-plugins")],
        cwd=elsewhere,
        env={"PYTHONPATH": f"{blocker}:{site}"},
    )
    assert result.code == 0, result.output
    _check_demo_output(result.out, "unix")
    assert f"({site}/aog_plugins/examples/echo)" in result.out  # the installed copy ran


def test_sigterm_ends_the_demo_of_sigterm_leaving_no_temporary_directory(
    tmp_path: Path, start_cli: Callable[..., Running]
) -> None:
    # SIGTERM's default action skipped the demo's cleanup: its temporary plugins
    # directory (a copy of the example) stayed behind, once per run.
    running = start_cli("demo", env={"TMPDIR": str(tmp_path)})
    running.plugin("plugin.py")  # the echo example is running: the demo is under way
    result = running.interrupt(signal.SIGTERM)  # also: no plugin, no socket dir left
    assert result.code == -signal.SIGTERM, result.output
    assert "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == []
