"""The committed generated code must be exactly what ``proto/`` generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    gen = _load_generator()
    fresh = gen.generate(tmp_path)  # type: ignore[attr-defined]
    committed_dir = ROOT / "aog_plugins" / "_proto"
    committed = sorted(
        p.name for p in committed_dir.iterdir() if p.is_file() and p.name != "__init__.py"
    )
    assert [p.name for p in fresh] == committed, (
        "generated file set differs: run scripts/gen_proto.py"
    )
    stale = [p.name for p in fresh if p.read_bytes() != (committed_dir / p.name).read_bytes()]
    assert not stale, f"out of date with proto/: {stale}; run python scripts/gen_proto.py"


def test_every_proto_has_generated_modules() -> None:
    for proto in (ROOT / "proto").glob("*.proto"):
        stem = proto.stem
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert (ROOT / "aog_plugins" / "_proto" / f"{stem}{suffix}").is_file()
