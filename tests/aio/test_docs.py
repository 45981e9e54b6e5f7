"""The README's asyncio example runs as written (with a fixture plugin's argv)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
