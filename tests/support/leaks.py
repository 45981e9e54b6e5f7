"""The suite's one leak check: every plugin a test starts carries a tag in its environment
(pass ``check.env``), and afterwards no tagged process, unreaped child or socket dir of
this process may be left."""

from __future__ import annotations

import glob
import os
import uuid
from dataclasses import dataclass, field

import psutil

__all__ = ["LeakCheck", "socket_dirs"]


def socket_dirs() -> set[str]:
    """This process's plugin socket dirs, in /tmp and in TMPDIR."""
    pattern = f"aogp-{os.getpid()}-*"
    tmp = os.environ.get("TMPDIR", "/tmp")
    return set(glob.glob(os.path.join("/tmp", pattern))) | set(
        glob.glob(os.path.join(tmp, pattern))
    )


@dataclass
class LeakCheck:
    """Tags the plugins of one test (or one module's shared plugins); :meth:`verify` fails
    if any is left, killing it first so one failure does not leak into the next test."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    dirs_before: set[str] = field(default_factory=socket_dirs)

    @property
    def env(self) -> dict[str, str]:
        return {"AOG_PLUGINS_TEST_TAG": self.tag}

    def tagged(self) -> list[psutil.Process]:
        """Every process carrying the tag, zombies included."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("AOG_PLUGINS_TEST_TAG") == self.tag:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    def processes(self) -> list[psutil.Process]:
        """The tagged processes still running (not zombies)."""
        found = []
        for proc in self.tagged():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def verify(self, *, zombies: bool = True, dirs: bool = True) -> None:
        """Fail on a tagged process still running, an unreaped child of this process
        (``zombies``) or a socket dir made since this check was created (``dirs``)."""
        left = self.processes()
        for proc in left:
            proc.kill()
        assert not left, f"plugin processes left running: {[p.pid for p in left]}"
        if zombies:
            unreaped = [
                c.pid for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE
            ]
            assert not unreaped, f"unreaped children: {unreaped}"
        if dirs:
            assert socket_dirs() - self.dirs_before == set(), "socket dirs left behind"
