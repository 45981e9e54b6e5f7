"""The suite's end-of-run leak check really fails a run that leaves a process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.wait import wait_gone

ROOT = Path(__file__).resolve().parents[1]

LEAKY = textwrap.dedent(
    """
    import subprocess, sys

    def test_leaks() -> None:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("leaked.pid", "w").write(str(proc.pid))
    """
)


def test_a_leaked_process_fails_the_run_and_is_killed(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {k: v for k, v in os.environ.items() if k != "AOG_PLUGINS_TEST_RUN"}
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "test_leaky.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "left running" in run.stdout
    pid = int((tmp_path / "leaked.pid").read_text())
    wait_gone([pid], 5, "the leak check to kill the leaked process")
