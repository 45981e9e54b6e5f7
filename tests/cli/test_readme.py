"""The README's command-line block runs as written, for a user who only installed the
package (no repository paths), from an unrelated directory."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli.conftest import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_line_block() -> str:
    section = README.read_text().split("## Command line", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no ```sh block in the README's Command line section"
    return match.group(1)


def test_readme_command_line_block_runs(tmp_path: Path) -> None:
    block = _command_line_block()
    assert "fixtures" not in block
    result = cli(command=["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path)
    assert result.code == 0, result.output
    assert "Traceback" not in result.output
    assert "plugin processes still running: none" in result.out  # demo
    assert '"provider": {' in result.out  # inspect --json
    assert '{"q": 1}' in result.out  # invoke echoes
    assert '{"index": 1}' in result.out  # invoke --stream
    assert "echo  remote  0.1.0" in result.out  # list
    assert "supervising 1 plugin(s)" in result.out  # run, stopped by SIGTERM
    assert "started  echo pid" in result.out
    assert "all plugins stopped" in result.out
