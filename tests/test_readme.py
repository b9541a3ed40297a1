"""Every shell block of the README runs as written on a fresh install, in order, as a new
user would paste it (blocks marked ``<!-- not run by tests/test_readme.py: why -->`` are
the set-up commands themselves)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- not run by tests/test_readme\.py:[^>]*-->\s*)?```sh\n(.*?)```", re.S)


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [body for marker, body in BLOCK.findall(text) if not marker]


def test_the_readme_has_blocks_to_run() -> None:
    blocks = readme_blocks()
    assert blocks, "no runnable ```sh block found: did the marker or the fences change?"
    assert any("lanewarden add" in b for b in blocks)


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "LANEWARDEN_"))}
    # a fresh user: nothing in ~/.lanewarden, `lanewarden` on PATH from this install
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    for number, block in enumerate(readme_blocks(), start=1):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (
            f"README block {number} failed:\n{block}\n{result.stdout}\n{result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
    assert (home / ".lanewarden" / "board.db").exists()
