"""The CLI end to end, in real subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from lanewarden.core.board import open_board
from lanewarden.core.config import load_config

from tests.conftest import LANEWARDEN
from tests.helpers import snapshot

CONFIG = """
[board]
url = "{url}"

[kanban.workers]
profile = "etl-worker"

[gateways.gpu]
base_url = "http://127.0.0.1:9/v1"

[profiles.etl-worker]
runner = "noop"

[profiles.analytics-worker]
runner = "noop"

[http]
listen = ""
"""


@pytest.fixture
def cli_env(board_url: str, lw_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "lanewarden.toml"
    path.write_text(CONFIG.format(url=board_url))
    return {**lw_env, "LANEWARDEN_CONFIG": str(path)}


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*LANEWARDEN, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_hermes_guide_script(cli_env: dict[str, str]) -> None:
    """The guide's parent/child script with `hermes kanban` replaced by `lanewarden`."""
    script = """
set -e
parent_id="$(lanewarden add --title 'Ingest logs' --profile etl-worker --column backlog)"
lanewarden add --title 'Report' --profile analytics-worker --column backlog --parent "${parent_id}"
"""
    bindir = Path(cli_env["LANEWARDEN_HOME"]) / "bin"
    bindir.mkdir(parents=True)
    shim = bindir / "lanewarden"
    shim.write_text(f'#!/bin/sh\nexec {" ".join(LANEWARDEN)} "$@"\n')
    shim.chmod(0o755)
    env = {**cli_env, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"  # the child's id, alone on its line
    shown = json.loads(run(cli_env, "show", "2", "--json").stdout)
    assert [p["id"] for p in shown["parents"]] == [1]
    assert shown["task"]["profile"] == "analytics-worker"
    assert any("parent #1 is backlog" in r for r in shown["waiting_on"])


def test_list_quiet_promote_and_json(cli_env: dict[str, str]) -> None:
    for i in range(5):
        run(cli_env, "add", f"task {i}", "--priority", str(i))
    quiet = run(cli_env, "list", "--column", "ready", "--limit", "3", "--quiet").stdout.split()
    assert quiet == ["5", "4", "3"]
    out = run(cli_env, "promote", "--id", "5", "--column", "active").stdout
    assert "#5 released" in out
    listed = json.loads(run(cli_env, "list", "--status", "ready,released", "--json").stdout)
    assert [(t["id"], t["lane"]) for t in listed if t["released"]] == [(5, "released")]
    assert run(cli_env, "list", "--column", "ready", "--quiet").stdout.split() == ["4", "3", "2", "1"]
    batch = run(cli_env, "promote-batch", "--from", "ready", "--to", "active", "--max", "2")
    assert batch.stdout.strip() == "released: #4, #3"
    assert "promote-batch" in batch.stderr and "#4, #3" in batch.stderr  # logged for host cron


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "99"], "no task #99"),
        (["add", "x", "--profile", "ghost"], "no profile 'ghost'"),
        (["add", "--title", ""], "needs a title"),
        (["add", "x" * 300], "limit is 200"),
        (["list", "--column", "sideways"], "--status (or --column) must be among"),
        (["promote", "--id", "1", "--column", "done"], "must be one of ready, active"),
        (["link", "1", "1"], "cannot depend on itself"),
        (["frobnicate"], "unknown command"),
        (["add", "t", "--max-attempts"], "needs a value"),
    ],
)
def test_bad_input_one_line_exit_2_no_change(cli_env: dict[str, str], args: list[str], message: str) -> None:
    run(cli_env, "add", "existing")
    config, _ = load_config(cli_env["LANEWARDEN_CONFIG"])
    board = open_board(config)
    before = snapshot(board)
    proc = run(cli_env, *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(board) == before
    board.db.dispose()


def test_cycle_refused(cli_env: dict[str, str]) -> None:
    run(cli_env, "add", "a")
    run(cli_env, "add", "b", "--parent", "1")
    proc = run(cli_env, "link", "--parent", "2", "--child", "1", check=False)
    assert proc.returncode == 2 and "cycle" in proc.stderr


def test_invalid_config_names_the_key(lw_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[kanban.dispatcher]\nmax_active_tasks = -1\n")
    proc = run({**lw_env, "LANEWARDEN_CONFIG": str(path)}, "list", check=False)
    assert proc.returncode == 2
    assert "kanban.dispatcher.max_active_tasks = -1: must be greater than or equal to 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_init_writes_config_and_creates_board(lw_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "conf" / "lanewarden.toml"
    proc = run(lw_env, "init", "--path", str(target))
    assert target.exists() and "board ready" in proc.stdout
    again = run(lw_env, "init", "--path", str(target), check=False)
    assert again.returncode == 2 and "--force" in again.stderr
    run({**lw_env, "LANEWARDEN_CONFIG": str(target)}, "add", "hello")
    assert (Path(lw_env["LANEWARDEN_HOME"]) / "board.db").exists()


def test_db_upgrade_reports_revision(cli_env: dict[str, str]) -> None:
    from lanewarden.core.db import SCHEMA_REVISION

    assert f"revision {SCHEMA_REVISION}" in run(cli_env, "db", "upgrade").stdout


def test_console_real_input_loop(cli_env: dict[str, str]) -> None:
    lines = (
        "\n".join(
            [
                "add Write the weekly report --priority 2",
                "add",
                "list --quiet",
                "caps set board 2",
                "show 1",
                "help promote",
                "bogus",
                "quit",
                "add never reached",
            ]
        )
        + "\n"
    )
    proc = subprocess.run(
        [*LANEWARDEN, "console"], input=lines, env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "error: add needs title" in out
    assert "board cap is now 2" in out
    assert "#1 Write the weekly report" in out
    assert "usage: promote" in out
    assert "error: unknown command 'bogus'" in out
    listed = run(cli_env, "list", "--quiet").stdout.split()
    assert listed == ["1"]  # the line after quit never ran


def test_status_chart_writes_a_png(cli_env: dict[str, str], tmp_path: Path) -> None:
    run(cli_env, "add", "something")
    proc = subprocess.run(
        [*LANEWARDEN, "status", "--chart"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    written = Path(proc.stdout.strip().splitlines()[-1].removeprefix("chart written to "))
    # under ~/.lanewarden/charts/, never into the working directory (where git status shows it)
    assert written.parent == Path(cli_env["LANEWARDEN_HOME"]) / "charts"
    assert written.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(tmp_path.glob("*.png"))
