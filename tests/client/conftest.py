"""Client tests run against real fixture plugin processes."""

from __future__ import annotations

from tests.process.conftest import leak_check

__all__ = ["leak_check"]
