#!/usr/bin/env python3
"""Test helper: run a plugin but announce another certificate in its handshake line.

``python swap_cert.py <plugin argv...>`` starts the plugin with this environment, copies
its handshake line to stdout with field 6 replaced by ``$AOG_INTEROP_FAKE_CERT`` (left
alone when that is empty), then waits for the plugin and exits with its status. A host
that pins the announced certificate must then refuse the connection.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main() -> int:
    fake = os.environ.get("AOG_INTEROP_FAKE_CERT", "")
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
    assert child.stdout is not None
    fields = child.stdout.readline().decode().rstrip("\n").split("|")
    if fake and len(fields) >= 6:
        fields[5] = fake
    sys.stdout.write("|".join(fields) + "\n")
    sys.stdout.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
