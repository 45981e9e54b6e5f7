"""Helpers for process-layer tests: fixture commands and a leak check per test."""

from __future__ import annotations

import glob
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "plugins"


def plugin_cmd(name: str, *args: str) -> list[str]:
    """argv running a Python fixture plugin with this interpreter."""
    return [sys.executable, str(FIXTURES / name), *args]


@dataclass
class LeakCheck:
    """Tags every plugin a test starts; after the test, none may remain."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def env(self) -> dict[str, str]:
        return {"AOG_PLUGINS_TEST_TAG": self.tag}

    def tagged(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("AOG_PLUGINS_TEST_TAG") == self.tag:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found


def _socket_dirs() -> set[str]:
    return set(glob.glob(f"/tmp/aogp-{os.getpid()}-*")) | set(
        glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"aogp-{os.getpid()}-*"))
    )


@pytest.fixture
def leak_check() -> Iterator[LeakCheck]:
    """Fails the test if a tagged process, a zombie child or a socket dir is left."""
    before = _socket_dirs()
    check = LeakCheck()
    yield check
    left = [p for p in check.tagged() if p.status() != psutil.STATUS_ZOMBIE]
    for proc in left:
        proc.kill()
    assert not left, f"plugin processes left running: {[p.pid for p in left]}"
    zombies = [c.pid for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    assert not zombies, f"unreaped children: {zombies}"
    assert _socket_dirs() - before == set(), "socket dirs left behind"
