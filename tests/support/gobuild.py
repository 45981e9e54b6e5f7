"""Build the Go fixtures (plugins and host) once per source state, into a cache outside
the repo, so every test run and every xdist worker reuses the same binaries.

The cache key hashes every .go/go.mod/go.sum file of both Go modules plus the toolchain
version; a build happens under an flock and lands with an atomic rename, so concurrent
workers never see half-written binaries. The cache root is ``$AOG_PLUGINS_GO_CACHE`` or
``$XDG_CACHE_HOME/aog-plugins/go`` (default ``~/.cache/aog-plugins/go``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS_DIR = REPO / "fixtures" / "plugins" / "go"
HOST_DIR = REPO / "fixtures" / "hosts" / "go"
BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class GoBinaries:
    """Paths of the built Go fixture executables."""

    aog_provider: Path
    misbehave: Path
    go_host: Path

    def all(self) -> tuple[Path, ...]:
        return (self.aog_provider, self.misbehave, self.go_host)


def cache_root() -> Path:
    """Where builds are cached: never inside the repository."""
    explicit = os.environ.get("AOG_PLUGINS_GO_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aog-plugins" / "go"


def _sources() -> list[Path]:
    found: list[Path] = []
    for root in (PLUGINS_DIR, HOST_DIR):
        for path in root.rglob("*"):
            if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
                found.append(path)
    return sorted(found)


def source_digest(go: str) -> str:
    """Hash of the toolchain identity and every Go source, module and sum file."""
    h = hashlib.sha256()
    toolchain = subprocess.run(
        [go, "env", "GOVERSION", "GOOS", "GOARCH"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    h.update(toolchain.encode())
    for path in _sources():
        h.update(str(path.relative_to(REPO)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _binaries(directory: Path) -> GoBinaries:
    return GoBinaries(
        aog_provider=directory / "aog-provider",
        misbehave=directory / "misbehave",
        go_host=directory / "go-host",
    )


def _complete(bins: GoBinaries) -> bool:
    return all(os.access(path, os.X_OK) for path in bins.all())


def _go_build(go: str, module_dir: Path, output: Path, *packages: str) -> None:
    env = dict(os.environ)
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly").strip()
    env["GOWORK"] = "off"
    env["CGO_ENABLED"] = "0"
    subprocess.run(
        [go, "build", "-trimpath", "-o", str(output), *packages],
        cwd=module_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=BUILD_TIMEOUT,
    )


def build_go_binaries(root: Path, go: str = "go") -> GoBinaries:
    """Return cached binaries for the current sources, building them first on a miss.

    Raises ``subprocess.CalledProcessError`` (with the compiler output) if a build fails.
    """
    final = root / source_digest(go)[:24]
    bins = _binaries(final)
    if _complete(bins):
        return bins
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _complete(bins):
            return bins  # another worker built it while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=root))
        try:
            # One -o directory and several main packages: one binary per package name.
            _go_build(go, PLUGINS_DIR, staging, "./cmd/aog-provider", "./cmd/misbehave")
            _go_build(go, HOST_DIR, staging / "go-host", ".")
            if final.exists():
                shutil.rmtree(final)  # an incomplete leftover (e.g. deleted binary)
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return bins


_built: GoBinaries | None = None


def require_go() -> str:
    """Path of ``go``; without one the calling test is skipped, or failed when ``CI`` is set."""
    go = shutil.which("go")
    if go is None:
        message = "Go toolchain not found on PATH: the Go fixtures need `go` (https://go.dev/dl/)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return go


def go_binaries() -> GoBinaries:
    """The Go fixture binaries, built once per source state (skip/fail if Go is missing).

    Without a ``go`` on PATH the calling test is skipped, or failed when ``CI`` is set.
    """
    global _built
    if _built is not None and _complete(_built):
        return _built
    go = require_go()
    try:
        _built = build_go_binaries(cache_root(), go)
    except subprocess.CalledProcessError as exc:
        pytest.fail(
            f"building the Go fixtures failed: {exc.cmd}\n{exc.stdout}{exc.stderr}", pytrace=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"building the Go fixtures timed out: {exc.cmd}", pytrace=False)
    return _built


def prebuild() -> None:
    """Warm the cache without skipping or failing (for ``pytest_sessionstart``).

    A cold build takes tens of seconds; doing it before the first test keeps it out of
    that test's timeout. Errors are left for ``go_binaries()`` to report.
    """
    go = shutil.which("go")
    if go is None:
        return
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        build_go_binaries(cache_root(), go)
