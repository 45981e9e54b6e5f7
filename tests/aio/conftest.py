"""asyncio tests run each coroutine with plain ``asyncio.run`` (no extra pytest plugin),
against real plugin processes: the interop matrix's fixtures, Go ones included."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TypeVar

from tests.process.conftest import leak_check

__all__ = ["WATCHER", "leak_check", "run", "watcher_cmd"]

_T = TypeVar("_T")
WATCHER = Path(__file__).resolve().parent / "cancel_watcher.py"


def run(coro: Coroutine[object, object, _T]) -> _T:
    """Run one test coroutine on a fresh event loop."""
    return asyncio.run(coro)


def watcher_cmd() -> list[str]:
    """argv of the plugin that records cancellations on its side."""
    return [sys.executable, str(WATCHER)]
