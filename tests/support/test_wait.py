"""The one polling helper: what it returns, and how a wait that runs out fails."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.wait import gone, wait_gone, wait_until


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, [], [7]])
    assert wait_until(lambda: next(answers), 10, "a non-empty list") == [7]


def test_running_out_names_what_was_awaited() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the answer$"):
        wait_until(lambda: False, 0.05, "the answer")


def test_a_callable_description_is_made_at_the_end() -> None:
    calls = []

    def condition() -> bool:
        calls.append(1)
        return False

    with pytest.raises(AssertionError, match=r"waiting for \d+ tries$") as info:
        wait_until(condition, 0.05, lambda: f"{len(calls)} tries")
    assert f"{len(calls)} tries" in str(info.value)  # described after the last try


def test_wait_gone_lists_what_still_runs() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(
            AssertionError, match=rf"the sleeper to end; still running: \[{proc.pid}\]"
        ):
            wait_gone([proc.pid], 0.05, "the sleeper to end")
        proc.kill()
        proc.wait()
        assert gone(proc.pid)
        wait_gone([proc.pid], 10, "the killed sleeper to end")
    finally:
        proc.kill()
        proc.wait()
