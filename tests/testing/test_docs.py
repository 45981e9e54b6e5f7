"""docs/testing.md's worked example runs as written against a Go plugin binary."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.testing.conftest import REPO

DOC = REPO / "docs" / "testing.md"


def _example() -> str:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, "docs/testing.md has no python example"
    return match.group(1)


def test_the_worked_example_is_under_20_lines() -> None:
    assert len(_example().splitlines()) < 20


def test_the_worked_example_passes_against_a_go_plugin(
    pytester: pytest.Pytester, go_provider: Path
) -> None:
    source, count = re.subn(
        r'^PLUGIN = ".*$', f"PLUGIN = {str(go_provider)!r}", _example(), flags=re.M
    )
    assert count == 1
    pytester.makepyfile(test_my_plugin=source)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2)
