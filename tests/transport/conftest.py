"""Transport tests run real plugin processes and check that none is left behind."""

from __future__ import annotations

from tests.process.conftest import leak_check

__all__ = ["leak_check"]
