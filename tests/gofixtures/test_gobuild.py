"""The build-once cache for the Go fixtures: hits, concurrent builders, missing toolchain."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.support import gobuild
from tests.support.gobuild import GoBinaries, build_go_binaries, cache_root, go_binaries

pytestmark = pytest.mark.timeout(600)  # the first test may pay for a cold Go build


def test_cache_lives_outside_the_repo_and_hits(go_bins: GoBinaries) -> None:
    assert not go_bins.go_host.resolve().is_relative_to(gobuild.REPO)
    assert go_bins.go_host.parent.parent == cache_root()
    assert go_binaries() == go_bins
    go = shutil.which("go")
    assert go is not None
    assert build_go_binaries(cache_root(), go) == go_bins


def test_concurrent_builders_share_one_build(go_bins: GoBinaries, tmp_path: Path) -> None:
    go = shutil.which("go")
    assert go is not None
    results: list[GoBinaries] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(build_go_binaries(tmp_path, go))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == results[1]
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert entries == sorted([".lock", results[0].go_host.parent.name])  # no staging left
    assert all(p.stat().st_size > 0 for p in results[0].all())

    # A damaged cache entry is rebuilt, not trusted.
    results[0].go_host.unlink()
    rebuilt = build_go_binaries(tmp_path, go)
    assert rebuilt == results[0]
    assert rebuilt.go_host.exists()


def test_missing_go_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gobuild, "_built", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Go toolchain not found"):
        go_binaries()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Go toolchain not found"):
        go_binaries()
