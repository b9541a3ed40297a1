"""Windows changed while `serve` runs reach its scheduler within a second, on both engines,
and every run is counted in /metrics: through a real `serve`, the real CLI in another
process, and a real scrape."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import load_config

from tests.conftest import LANEWARDEN
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config
from tests.test_metrics import http_port, scrape, value
from tests.test_windows_serve import window_runs

pytestmark = pytest.mark.slow


def test_a_window_added_and_removed_from_another_process_is_scheduled_and_counted(
    tmp_path: Path, board_url: str
) -> None:
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": board_url},
            "kanban.dispatcher": {"enabled": False, "heartbeat_seconds": 0.5, "lease_seconds": 2.0},
            "kanban.workers": {"profile": "noop"},
            "profiles.noop": {"runner": "noop"},
            "scheduler": {"leader_lease_seconds": 2.0},
            "alerts": {"digest_cron": ""},
            "http": {"listen": "127.0.0.1:0"},
        },
    )
    config, _ = load_config(config_path)
    board = open_board(config)
    for i in range(30):
        board.add(NewTask(title=f"t{i}", column="backlog"), "test")
    env = clean_env(tmp_path / "home")
    cli_env = {**env, "LANEWARDEN_CONFIG": str(config_path)}
    proc = ServeProcess(config_path, env, tmp_path / "serve.log")
    try:
        port = wait_until(lambda: http_port(proc), timeout=60, what="the HTTP endpoint", procs=[proc])
        wait_until(lambda: "scheduler started" in proc.output(), what="the scheduler", procs=[proc])
        added = subprocess.run(
            [
                *LANEWARDEN,
                "windows",
                "add",
                "each-second",
                "--cron",
                "* * * * * *",
                "--timezone",
                "UTC",
                "--command",
                "promote-batch --from backlog --to ready --max 1",
            ],
            env=cli_env,
            capture_output=True,
            text=True,
        )
        assert added.returncode == 0, added.stderr
        # scheduled without a restart: the window runs, and each run is counted
        wait_until(lambda: len(window_runs(board)) >= 2, what="two window runs", procs=[proc])

        def counted() -> float | None:
            runs = value(scrape(port), "lanewarden_scheduler_job_runs_total", job="each-second")
            return runs if runs and runs >= 2 else None

        assert wait_until(counted, what="job runs in /metrics", procs=[proc]) >= 2
        removed = subprocess.run(
            [*LANEWARDEN, "windows", "remove", "each-second"], env=cli_env, capture_output=True, text=True
        )
        assert removed.returncode == 0, removed.stderr
        # unscheduled without a restart: after a settle period no new run starts
        wait_until(lambda: _quiet_for(board, seconds=3), timeout=30, what="no more runs", procs=[proc])
    finally:
        assert proc.terminate() == 0, proc.output()[-3000:]
    board.db.dispose()


def _quiet_for(board, seconds: float) -> bool:
    """True once no window has run for ``seconds``."""
    before = len(window_runs(board))
    time.sleep(seconds)
    return len(window_runs(board)) == before
