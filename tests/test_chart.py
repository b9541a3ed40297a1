"""``status --chart``: only recorded history, an axis fitted to it, and a file where asked."""

from __future__ import annotations

import struct
import subprocess
from datetime import timedelta
from pathlib import Path

from lanewarden.bot.tools.chart import ChartHistory, status_chart_png
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.gateway_state import record_health, record_limit
from lanewarden.core.gateways import GatewayHealth
from lanewarden.core.node_monitor import record_reading
from lanewarden.core.nodes import NodeFigures
from lanewarden.core.schema import runs
from sqlalchemy import insert

from tests.conftest import LANEWARDEN, make_config
from tests.serve_helpers import write_config


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def chart_board(url: str) -> Board:
    return open_board(
        make_config(
            url,
            gateways={
                "gpu1": {
                    "base_url": "http://127.0.0.1:9/v1",
                    "max_concurrency": 3,
                    "node_metrics": ["http://x/m"],
                }
            },
            profiles={"default": {"runner": "noop"}, "llm": {"gateway": "gpu1", "model": "m"}},
        )
    )


def three_minutes_of_runs(board: Board) -> None:
    now = utcnow()
    task = board.add(NewTask(title="t", profile="llm", column="backlog"), "test")
    with board.db.write() as conn:
        conn.execute(
            insert(runs),
            [
                {
                    "task_id": task.id,
                    "attempt": i + 1,
                    "dispatcher": "d",
                    "profile": "llm",
                    "gateway": "gpu1",
                    "claimed_at": now - timedelta(seconds=180 - 10 * i),
                    "started_at": now - timedelta(seconds=180 - 10 * i),
                    "lease_expires_at": now,
                    "finished_at": now - timedelta(seconds=175 - 10 * i),
                    "outcome": "succeeded",
                    "latency_ms": 5000.0,
                    "completion_tokens": 100,
                }
                for i in range(17)
            ],
        )


def test_the_axis_starts_at_the_first_record_not_an_hour_ago(tmp_path: Path) -> None:
    board = chart_board(f"sqlite:///{tmp_path / 'board.db'}")
    three_minutes_of_runs(board)
    now = utcnow()
    history = ChartHistory.load(board, now - timedelta(hours=1), now)
    assert timedelta(seconds=179) <= now - history.start <= timedelta(seconds=181)
    # nothing recorded at all: a short axis, not an empty hour
    empty = chart_board(f"sqlite:///{tmp_path / 'empty.db'}")
    assert now - ChartHistory.load(empty, now - timedelta(hours=1), now).start == timedelta(minutes=2)
    width, height = png_size(status_chart_png(empty))
    assert 900 <= width <= 1300 and 600 <= height <= 900  # reads in a Slack or Discord preview
    board.db.dispose()
    empty.db.dispose()


def test_outages_and_limit_changes_come_from_the_record(tmp_path: Path) -> None:
    board = chart_board(f"sqlite:///{tmp_path / 'board.db'}")
    now = utcnow()
    with board.db.write() as conn:
        record_limit(conn, "gpu1", now - timedelta(minutes=30), 2, 1, "adaptive")
    record_health(board.db, GatewayHealth("gpu1", False, "refused"), now - timedelta(minutes=20))
    record_health(board.db, GatewayHealth("gpu1", True, "200"), now - timedelta(minutes=10))
    record_health(board.db, GatewayHealth("gpu1", False, "refused"), now - timedelta(minutes=5))
    record_reading(board.db, board.config, "gpu1", NodeFigures(gpu_util=50.0), now - timedelta(minutes=8))
    history = ChartHistory.load(board, now - timedelta(minutes=15), now)
    # one outage ended inside the window, one still going; the limit's record starts before it
    assert history.outages["gpu1"] == [
        (now - timedelta(minutes=20), now - timedelta(minutes=10)),
        (now - timedelta(minutes=5), None),
    ]
    assert [r.reason for r in history.limit_rows["gpu1"]] == ["down", "recovered", "down"]
    assert history.start == now - timedelta(minutes=15)  # the outage reaches back past the window
    assert png_size(status_chart_png(board, window=timedelta(minutes=15)))[0] > 900
    board.db.dispose()


def test_cli_writes_where_asked_and_never_into_the_working_directory(
    tmp_path: Path, lw_env: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'board.db'}"
    three_minutes_of_runs(chart_board(url))
    config = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": url},
            "gateways.gpu1": {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": 3},
            "profiles.llm": {"gateway": "gpu1", "model": "m"},
            "http": {"listen": ""},
        },
    )
    work = tmp_path / "work"
    work.mkdir()

    def lanewarden(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [*LANEWARDEN, "--config", str(config), *args]
        return subprocess.run(argv, env=lw_env, cwd=work, capture_output=True, text=True, timeout=60)

    wanted = tmp_path / "out.png"
    done = lanewarden("status", "--chart", "--since", "15m", "--output", str(wanted))
    assert done.returncode == 0, done.stderr
    assert f"chart written to {wanted}" in done.stdout and png_size(wanted.read_bytes())[0] > 900
    done = lanewarden("status", "--chart")
    assert done.returncode == 0, done.stderr
    charts = list((Path(lw_env["LANEWARDEN_HOME"]) / "charts").glob("lanewarden-status-*.png"))
    assert len(charts) == 1 and list(work.iterdir()) == []
    for bad, message in (
        (["--chart", "--since", "30s"], "covers 1m to 1d"),
        (["--chart", "--since", "soon"], "is not a duration"),
        (["--since", "15m"], "add --chart"),
        (["--chart", "--output", str(tmp_path / "nowhere" / "x.png")], "does not exist"),
        (["--chart", "--output", str(tmp_path / "x.jpg")], "must end in .png"),
    ):
        done = lanewarden("status", *bad)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_cap_changes_are_drawn_where_they_happened(tmp_path: Path) -> None:
    board = chart_board(f"sqlite:///{tmp_path / 'board.db'}")
    board.set_cap("gateway", "gpu1", 5, "cli:ops")
    board.set_cap("board", None, 9, "cli:ops")  # not a gateway's: not on its line
    board.reset_cap("gateway", "gpu1", "cli:ops")
    now = utcnow()
    history = ChartHistory.load(board, now - timedelta(hours=1), now)
    # set to 5, then back to the config's 3; the board cap is not a gateway's
    assert [value for _, value in history.caps["gpu1"]] == [5, 3]
    board.db.dispose()
