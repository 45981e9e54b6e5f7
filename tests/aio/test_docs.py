"""The README's asyncio example runs as written (with a fixture plugin's argv)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_asyncio_example_runs(leak_check: LeakCheck) -> None:
    section = README.read_text().split("## asyncio\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    argv = plugin_cmd("local_provider.py")
    code = match.group(1).replace('"/path/to/plugin"', repr(argv))
    code = code.replace("auto_mtls=True", f"auto_mtls=True, extra_env={leak_check.env!r}")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), namespace)
    run(namespace["main"]())


def test_the_broker_example_in_docs_asyncio_runs(
    leak_check: LeakCheck, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(README.parent)  # the example runs from the repository root
    text = (README.parent / "docs" / "asyncio.md").read_text()
    section = text.split("## The GRPCBroker", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    code = match.group(1).replace("auto_mtls=True", f"auto_mtls=True, extra_env={leak_check.env!r}")
    exec(compile(code, "docs/asyncio.md", "exec"), {"__name__": "__main__"})
    out = capfd.readouterr().out.splitlines()
    assert out[-2:] == ["py-plugin got host answered hi", "plugin: yo"]
