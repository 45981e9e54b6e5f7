"""The broker example in docs/interop.md runs as written, from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.process.conftest import LeakCheck

REPO = Path(__file__).resolve().parents[2]


def test_broker_example_runs(leak_check: LeakCheck) -> None:
    text = (REPO / "docs" / "interop.md").read_text()
    section = text.split("## The GRPCBroker", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the broker section of docs/interop.md"
    done = subprocess.run(
        [sys.executable, "-c", match.group(1)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **leak_check.env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["py-plugin got host answered hi", "plugin answered yo"]
