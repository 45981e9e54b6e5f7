"""Regenerate the committed protobuf and gRPC modules from ``proto/``.

Usage: ``python scripts/gen_proto.py [OUT_DIR]``. Without OUT_DIR it writes into the
source tree; tests pass a temp dir and compare, to prove the committed code is in sync.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_PATH = "aog_plugins/_proto"


def generate(out_root: Path) -> list[Path]:
    """Generate every ``proto/*.proto`` into ``out_root/aog_plugins/_proto``; return the files."""
    target = out_root / PACKAGE_PATH
    target.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    protos = sorted(PROTO_DIR.glob("*.proto"))
    mypy_plugin = shutil.which("protoc-gen-mypy")
    mypy_grpc_plugin = shutil.which("protoc-gen-mypy_grpc")
    if not mypy_plugin or not mypy_grpc_plugin:
        raise SystemExit("protoc-gen-mypy not found: pip install mypy-protobuf")
    args = [
        "grpc_tools.protoc",
        f"-I{PACKAGE_PATH}={PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(f"{PROTO_DIR / p.name}" for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in target.iterdir() if p.name != "__init__.py" and p.is_file())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))
