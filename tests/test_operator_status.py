"""Honest status on the command line (issue 17, items 8, 9, 11, 17): ages and stale
readings, only live processes, the real reason ready work is not starting, `caps` as
"in use / limit / cap", and `list --output json|yaml|table`. Real `lanewarden`
subprocesses against a board on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.gateway_state import record_health, set_gateway_state
from lanewarden.core.gateways import GatewayHealth
from lanewarden.core.schema import dispatchers
from sqlalchemy import insert

from tests.conftest import LANEWARDEN

CONFIG = """
[board]
url = "{url}"

[kanban.workers]
profile = "researcher"

[gateways.gpu]
base_url = "http://127.0.0.1:9/v1"
max_concurrency = 4
probe_interval_seconds = 10

[profiles.researcher]
gateway = "gpu"
model = "m"

[http]
listen = ""
"""


@pytest.fixture
def env(board_url: str, lw_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "lanewarden.toml"
    path.write_text(CONFIG.format(url=board_url))
    return {**lw_env, "LANEWARDEN_CONFIG": str(path)}


@pytest.fixture
def cli_board(env: dict[str, str]) -> Iterator[Board]:
    config, _ = load_config(env["LANEWARDEN_CONFIG"])
    board = open_board(config)
    yield board
    board.db.dispose()


def lw(env: dict[str, str], *args: str, code: int = 0) -> str:
    proc = subprocess.run(
        [*LANEWARDEN, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == code, proc.stderr
    return proc.stdout if code == 0 else proc.stderr


def test_status_ages_gateway_readings_and_marks_a_stale_one(env: dict[str, str], cli_board: Board) -> None:
    record_health(cli_board.db, GatewayHealth("gpu", True, "ok"), utcnow() - timedelta(hours=1))
    out = lw(env, "status")
    # nothing has probed it for an hour (3 probe intervals are 30 s): only what it was
    assert "gateway gpu (openai): up [stale: checked 1h ago]" in out
    record_health(cli_board.db, GatewayHealth("gpu", True, "ok"))
    out = lw(env, "status")
    assert "gateway gpu (openai): up, checked " in out and "stale" not in out
    report = json.loads(lw(env, "status", "--json"))
    assert report["gateways"][0]["stale"] is False and report["gateways"][0]["checked_seconds_ago"] < 30


def test_status_counts_only_live_processes_and_says_since_when(env: dict[str, str], cli_board: Board) -> None:
    assert "processes: none has run on this board yet" in lw(env, "status")
    now = utcnow()
    with cli_board.db.write() as conn:
        conn.execute(
            insert(dispatchers).values(
                id="vm:13758:134f",
                host="vm",
                pid=13758,
                started_at=now - timedelta(hours=1),
                heartbeat_at=now - timedelta(minutes=7),
                state="stopped",
            )
        )
    out = lw(env, "status")
    seen = (now - timedelta(minutes=7)).strftime("%H:%M")
    assert f"processes: no live process since {seen} UTC (7m ago)" in out
    assert "vm:13758:134f" not in out
    with cli_board.db.write() as conn:
        conn.execute(
            insert(dispatchers).values(
                id="vm:1:live", host="vm", pid=1, started_at=now, heartbeat_at=utcnow(), state="running"
            )
        )
    assert "processes: 1 live (vm:1:live beat " in lw(env, "status")


def test_status_gives_the_real_reason_released_work_is_not_starting(
    env: dict[str, str], cli_board: Board
) -> None:
    now = utcnow()
    with cli_board.db.write() as conn:
        conn.execute(
            insert(dispatchers).values(
                id="vm:1:live", host="vm", pid=1, started_at=now, heartbeat_at=now, state="running"
            )
        )
    task = cli_board.add(NewTask(title="summarise", profile="researcher", column="ready"), "tester")
    lw(env, "promote", str(task.id), "active")
    record_health(cli_board.db, GatewayHealth("gpu", False, "connection refused"))
    out = lw(env, "status")
    assert "released waiting for a slot" not in out
    assert "not starting (1 task): gateway gpu is down: connection refused" in out
    lw(env, "pause", "--gateway", "gpu")
    out = lw(env, "status")
    assert "not starting (1 task): gateway gpu is paused (resume --gateway gpu)" in out
    held = json.loads(lw(env, "status", "--json"))["held_back"]
    assert {"reason": "gateway gpu is paused (resume --gateway gpu)", "tasks": 1} in held


def test_caps_prints_in_use_limit_and_cap(env: dict[str, str], cli_board: Board) -> None:
    with cli_board.db.write() as conn:  # the adaptive/slow-start window below the cap
        set_gateway_state(conn, "gpu", utcnow(), current_limit=2)
    out = lw(env, "caps")
    assert "gateway gpu: 0 in use / 2 limit / 4 cap" in out
    assert "board: 0/4 active" in out


def test_list_output_json_yaml_and_table(env: dict[str, str], cli_board: Board) -> None:
    cli_board.add(NewTask(title="one", profile="researcher", column="backlog"), "tester")
    as_json = json.loads(lw(env, "list", "--json"))
    assert json.loads(lw(env, "list", "--output", "json")) == as_json
    assert yaml.safe_load(lw(env, "list", "--output", "yaml")) == as_json
    table = lw(env, "list", "--output", "table").splitlines()
    assert table[0].split() == ["ID", "STATUS", "PRI", "PROFILE", "AGE", "TITLE"]
    assert table[1].endswith("one")
    assert "--json and --output yaml disagree" in lw(env, "list", "--json", "--output", "yaml", code=2)
    assert "xml" in lw(env, "list", "--output", "xml", code=2)


def test_status_watch_redraws_in_place_on_a_terminal_until_ctrl_c(
    env: dict[str, str], cli_board: Board
) -> None:
    import pexpect

    child = pexpect.spawn(
        LANEWARDEN[0],
        [*LANEWARDEN[1:], "status", "--watch", "--interval", "1"],
        env={**env, "TERM": "xterm"},
        encoding="utf-8",
        timeout=30,
        # a person's terminal delivers Ctrl-C; a runner started in the background (nohup, CI)
        # may pass SIGINT on as ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        child.expect_exact("\x1b[H\x1b[2J")  # the screen is cleared, then the report drawn
        child.expect(r"every 1s at (\d\d:\d\d:\d\d) UTC \(Ctrl-C leaves\)")
        first = child.match.group(1)
        child.expect_exact("queue: backlog 0")
        # a task added meanwhile shows up in the next frame, drawn over the last
        cli_board.add(NewTask(title="new", profile="researcher", column="backlog"), "tester")
        child.expect_exact("\x1b[H\x1b[2J")
        child.expect(r"every 1s at (\d\d:\d\d:\d\d) UTC")
        child.expect_exact("queue: backlog 1")
        assert child.match is not None and first
        # a stale gateway reading is dimmed
        record_health(cli_board.db, GatewayHealth("gpu", True, "ok"), utcnow() - timedelta(hours=1))
        child.expect_exact("\x1b[2mgateway gpu (openai): up [stale: checked 1h ago]")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "--interval needs a whole number" in lw(env, "status", "--watch", "--interval", "0", code=2)
