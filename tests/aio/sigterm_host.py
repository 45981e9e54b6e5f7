#!/usr/bin/env python3
"""Test host: an asyncio application that launches a plugin with aog_plugins.aio, prints
the plugin's pid, then waits forever (the test sends it SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aog_plugins.aio import launch


async def main(argv: list[str]) -> None:
    plugin = await launch(argv)
    print(json.dumps({"pid": plugin.pid}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(json.loads(sys.argv[1])))
