"""The committed Go stubs must be what fixtures/plugins/go/gen.sh makes from proto/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gobuild import PLUGINS_DIR, require_go

pytestmark = pytest.mark.timeout(600)  # first run installs the pinned generators


def _body(path: Path) -> list[str]:
    """File lines minus the header naming the protoc version (that follows grpcio-tools)."""
    return [
        line
        for line in path.read_text().splitlines()
        if not line.startswith(("// \tprotoc ", "// - protoc "))
    ]


def test_go_stubs_match_proto(tmp_path: Path) -> None:
    require_go()
    subprocess.run(
        ["bash", str(PLUGINS_DIR / "gen.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=540,
        env={**os.environ, "PYTHON": sys.executable},
    )
    committed = PLUGINS_DIR / "protocol"
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in committed.iterdir())
    stale = [name for name in fresh if _body(tmp_path / name) != _body(committed / name)]
    assert not stale, f"Go stubs out of date with proto/: {stale}; run fixtures/plugins/go/gen.sh"
