"""Fixtures for testing the pytest plugin: inner suites run by pytester in a subprocess,
so every plugin they start is a real, separate process of a real pytest run."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.gobuild import go_binaries

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "fixtures" / "plugins"
LOCAL_PROVIDER = PLUGINS / "local_provider.py"
MISBEHAVE = PLUGINS / "misbehave.py"


@pytest.fixture(scope="session")
def go_provider() -> Path:
    """The Go aog-provider fixture binary (skips without Go; fails under CI)."""
    return go_binaries().aog_provider


def run_inner(
    pytester: pytest.Pytester, source: str, *args: str, **consts: object
) -> pytest.RunResult:
    """Write ``source`` (dedented; ``consts`` prepended as module constants) as
    test_inner.py and run pytest on it in a subprocess with the installed plugin."""
    header = "".join(f"{name} = {value!r}\n" for name, value in consts.items())
    header += f"PYTHON = {sys.executable!r}\n"
    pytester.makepyfile(test_inner=header + textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)
