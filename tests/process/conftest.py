"""Helpers for process-layer tests: fixture commands and a leak check per test
(:mod:`tests.support.leaks`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leaks import LeakCheck

__all__ = ["FIXTURES", "LeakCheck", "leak_check", "plugin_cmd"]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "plugins"


def plugin_cmd(name: str, *args: str) -> list[str]:
    """argv running a Python fixture plugin with this interpreter."""
    return [sys.executable, str(FIXTURES / name), *args]


@pytest.fixture
def leak_check() -> Iterator[LeakCheck]:
    """Fails the test if a tagged process, a zombie child or a socket dir is left."""
    check = LeakCheck()
    yield check
    check.verify()
