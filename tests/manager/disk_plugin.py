"""A Python AOG plugin that lives on disk like a real one (used through a generated
``bin/<os>-<arch>/<exe>`` wrapper that passes its own path as argv[1]).

Like real AOG plugins it finds its ``plugin.yaml`` (or .yml/.json) by walking up from its
executable and exits 1 without one. Its manifest is that file. Every declared service
answers ``whoami``: name, version, pid, cwd, ``AOG_VERSION`` and ``DISK_PLUGIN_EXTRA``
from its environment; ``{"ms": N}`` in the request makes it sleep N ms first. A manifest
key ``x_test: {exit_at_start: N}`` makes it exit with N before serving.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aog_plugins.server import serve_provider
from aog_plugins.types import MANIFEST_FILENAMES, PluginManifest


def find_manifest(executable: str) -> Path | None:
    here = Path(executable).resolve().parent
    for directory in (here, *here.parents):
        for name in MANIFEST_FILENAMES:
            if (directory / name).is_file():
                return directory / name
    return None


class DiskProvider:
    def __init__(self, manifest: PluginManifest) -> None:
        self.manifest = manifest
        self.status = 0

    def get_manifest(self) -> PluginManifest:
        return self.manifest

    def get_operate_status(self) -> int:
        return self.status

    def set_operate_status(self, status: int) -> None:
        self.status = status

    def health_check(self) -> None:
        return None

    def invoke_service(self, service_name: str, request: bytes, auth_info: str = "") -> bytes:
        try:
            knobs = json.loads(request or b"{}")
        except ValueError:
            knobs = {}
        if isinstance(knobs, dict) and knobs.get("ms"):
            time.sleep(float(knobs["ms"]) / 1000)
        return json.dumps(
            {
                "service": service_name,
                "name": self.manifest.provider.name,
                "version": self.manifest.provider.version,
                "pid": os.getpid(),
                "cwd": os.getcwd(),
                "aog_version": os.environ.get("AOG_VERSION"),
                "extra": os.environ.get("DISK_PLUGIN_EXTRA"),
                "home": os.environ.get("HOME"),
            }
        ).encode()


def main() -> None:
    path = find_manifest(sys.argv[1] if len(sys.argv) > 1 else sys.argv[0])
    if path is None:
        print("plugin.yaml not found above the executable", file=sys.stderr)
        sys.exit(1)
    manifest = PluginManifest.load(path)
    test = manifest.extra.get("x_test") or {}
    if test.get("exit_at_start"):
        print("exiting at start as configured", file=sys.stderr)
        sys.exit(int(test["exit_at_start"]))
    serve_provider(DiskProvider(manifest))


if __name__ == "__main__":
    main()
