"""Plugins directories laid out exactly like AOG's, generated per test, and a leak check."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from aog_plugins.manager import ManagerEvent
from aog_plugins.types import go_arch, go_os
from tests.support.gobuild import GoBinaries, go_binaries
from tests.support.leaks import LeakCheck
from tests.support.wait import wait_until

DISK_PLUGIN = Path(__file__).resolve().parent / "disk_plugin.py"
PLATFORM = f"{go_os()}_{go_arch()}"
BIN_DIR = f"bin/{go_os()}-{go_arch()}"


def wrapper_script(extra_lines: Sequence[str] = ()) -> str:
    """A shell executable that runs disk_plugin.py with this interpreter."""
    lines = ["#!/bin/sh", *extra_lines, f'exec "{sys.executable}" "{DISK_PLUGIN}" "$0" "$@"']
    return "\n".join(lines) + "\n"


def manifest_doc(
    name: str,
    *,
    version: str = "1.0.0",
    kind: str = "local",
    services: Sequence[tuple[str, str]] = (("chat", "chat"),),
    executable: str | None = None,
    test: dict[str, object] | None = None,
) -> dict[str, object]:
    doc: dict[str, object] = {
        "version": "1.0",
        "provider": {"name": name, "display_name": name, "version": version, "type": kind},
        "services": [
            {"service_name": s, "task_type": t, "protocol": "HTTP", "expose_protocol": "HTTP"}
            for s, t in services
        ],
        "platforms": {PLATFORM: {"executable": executable or f"{BIN_DIR}/{name}"}},
    }
    if test:
        doc["x_test"] = test
    return doc


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` the way deploy tools do: write aside, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


@dataclass
class Layout:
    """A plugins directory in a tmp dir."""

    root: Path
    go: GoBinaries | None = None

    def add(
        self,
        dirname: str,
        name: str | None = None,
        *,
        manifest: dict[str, object] | None = None,
        manifest_name: str = "plugin.yaml",
        exe_mode: int = 0o755,
        wrapper_lines: Sequence[str] = (),
        write_exe: bool = True,
        into: Path | None = None,
        version: str = "1.0.0",
        kind: str = "local",
        services: Sequence[tuple[str, str]] = (("chat", "chat"),),
        test: dict[str, object] | None = None,
    ) -> Path:
        """A Python plugin directory; returns it."""
        name = name or dirname
        base = into or self.root
        directory = base / dirname
        directory.mkdir(parents=True, exist_ok=True)
        doc = manifest or manifest_doc(
            name, version=version, kind=kind, services=services, test=test
        )
        self.write_manifest(directory, doc, manifest_name)
        if write_exe:
            exe = directory / f"{BIN_DIR}/{name}"
            write_atomic(exe, wrapper_script(wrapper_lines).encode(), exe_mode)
        return directory

    def write_manifest(
        self, directory: Path, doc: dict[str, object], manifest_name: str = "plugin.yaml"
    ) -> None:
        if manifest_name.endswith(".json"):
            text = json.dumps(doc)
        else:
            text = yaml.safe_dump(doc, sort_keys=False)
        write_atomic(directory / manifest_name, text.encode())

    def add_go(self, dirname: str, name: str | None = None, *, into: Path | None = None) -> Path:
        """The Go aog-provider fixture laid out as an AOG plugin (a copy of the binary)."""
        assert self.go is not None
        name = name or dirname
        directory = (into or self.root) / dirname
        self.write_manifest(directory, manifest_doc(name, services=(("echo", "chat"),)))
        exe = directory / f"{BIN_DIR}/{name}"
        exe.parent.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_name(f".{exe.name}.tmp")
        shutil.copy2(self.go.aog_provider, tmp)
        os.replace(tmp, exe)
        return directory

    def exe(self, dirname: str, name: str | None = None) -> Path:
        return self.root / dirname / BIN_DIR / (name or dirname)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "plugins"
    root.mkdir()
    return Layout(root)


@pytest.fixture
def go_layout(layout: Layout) -> Layout:
    layout.go = go_binaries()
    return layout


def manager_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith(("aog-plugins-manager", "aog-plugins-watch", "aog-plugins-idle"))
    ]


@pytest.fixture
def leaks() -> Iterator[LeakCheck]:
    """Fails the test if a tagged process, a zombie child, a socket dir or a manager
    thread is left once the test is over (the test must have closed its manager)."""
    check = LeakCheck()
    yield check
    check.verify()
    assert manager_threads() == [], f"manager threads left: {manager_threads()}"


class EventLog:
    """Collects manager events with the thread each one was delivered on."""

    def __init__(self) -> None:
        self.events: list[ManagerEvent] = []
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, event: ManagerEvent) -> None:
        with self._lock:
            self.events.append(event)
            self.threads.append(threading.current_thread().name)

    def of(self, kind: str, name: str | None = None) -> list[ManagerEvent]:
        with self._lock:
            return [e for e in self.events if e.kind == kind and (name is None or e.name == name)]

    def kinds(self, name: str) -> list[str]:
        with self._lock:
            return [e.kind for e in self.events if e.name == name]

    def wait(self, kind: str, name: str, count: int = 1, timeout: float = 30.0) -> ManagerEvent:
        wait_until(lambda: len(self.of(kind, name)) >= count, timeout, f"{count} {kind} of {name}")
        return self.of(kind, name)[count - 1]
