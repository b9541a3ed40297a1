"""The terminal's live views: ``logs --follow`` and ``status --watch``.

Both poll the board (the runs' output is written as it streams, core/run_output.py; the
status report is the read model's), so they work from any host against a shared board,
whichever process runs the task. Ctrl-C leaves either.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lanewarden.bot.render import run_log_header, status_text
from lanewarden.core.board import Board
from lanewarden.core.results import LogsShown
from lanewarden.core.run_output import output_after, task_logs
from lanewarden.core.status import build_status

FOLLOW_POLL_SECONDS = 0.5
# a task in one of these has nothing more to run (until someone retries it)
AT_REST = ("done", "failed", "cancelled", "blocked", "backlog")
CLEAR_SCREEN = "\x1b[H\x1b[2J"
DIM, PLAIN = "\x1b[2m", "\x1b[0m"


def follow_logs(board: Board, shown: LogsShown, write: Callable[[str], None]) -> None:
    """After ``shown`` (what ``logs`` printed), print each run's new output as it comes,
    new runs (a retry) with their header, until the task is at rest and its runs are over."""
    task_id = shown.task.id
    seen = {log.run.id: log.last_seq for log in shown.logs}
    while True:
        task = board.get(task_id)
        with board.db.read() as conn:
            logs = task_logs(conn, task_id, shown.command.attempt)  # type: ignore[attr-defined]
            for log in logs:
                if log.run.id not in seen:
                    write(run_log_header(task, log) + "\n")
                    seen[log.run.id] = 0
                for seq, text in output_after(conn, log.run.id, seen[log.run.id]):
                    write(text)
                    seen[log.run.id] = seq
        running = any(log.run.finished_at is None for log in logs)
        if task.status in AT_REST and not running:
            write(f"\n{task.ref} is {task.lane}\n")
            return
        time.sleep(FOLLOW_POLL_SECONDS)


def watch_status(board: Board, interval: float, write: Callable[[str], None], terminal: bool) -> None:
    """``status`` redrawn in place every ``interval`` seconds until Ctrl-C. Stale readings
    are dimmed on a terminal (their text says "stale" everywhere else)."""
    while True:
        report = build_status(board.db, board.config)
        text = status_text(report)
        header = f"lanewarden status, every {interval:g}s at {report.at:%H:%M:%S} UTC (Ctrl-C leaves)"
        if terminal:
            text = "\n".join(f"{DIM}{line}{PLAIN}" if "stale" in line else line for line in text.splitlines())
            write(f"{CLEAR_SCREEN}{header}\n\n{text}\n")
        else:  # piped: one report after another
            write(f"{header}\n{text}\n\n")
        time.sleep(interval)
