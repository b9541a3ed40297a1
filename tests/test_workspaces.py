"""Workspaces are keyed by board and run, and cleaned by the retention rule (issue 13, item 7)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lanewarden.core import workspaces
from lanewarden.core.board import Board

from tests.conftest import make_config
from tests.dispatch_helpers import FAST, add_tasks, all_in, new_board, run_rows, running, wait_for

# leaves a file behind, and reports whether the previous occupant's file was there
AGENT = (
    'if [ -e note.txt ]; then echo "saw: $(cat note.txt)"; else echo clean; fi; echo "$1" > note.txt; exit $2'
)


def _board(tmp_path: Path, name: str, exit_status: int = 0, keep: str = "failed") -> Board:
    config = make_config(
        f"sqlite:///{tmp_path / name}.db",
        kanban={
            "dispatcher": {**FAST, "max_active_tasks": 4},
            "workers": {"profile": "agent", "keep_workspaces": keep},
        },
        gateways={},
        profiles={
            "agent": {"runner": "command", "command": ["sh", "-c", AGENT, "sh", name, str(exit_status)]}
        },
    )
    return new_board(config)


async def test_task_1_of_two_boards_never_share_a_workspace(tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    results = {}
    for name in ("alpha", "beta"):
        board = _board(tmp_path, name, keep="all")
        (tid,) = add_tasks(board, 1, "agent")
        assert tid == 1
        async with running(board, workspace_root=root):
            await wait_for(lambda b=board: all_in(b, "done"), what="done")
        results[name] = board.get(tid).result
        (run_id,) = [r.id for r in run_rows(board, tid)]
        kept = root / workspaces.board_key(board.db.url) / f"task-{tid}-run-{run_id}"
        assert (kept / "note.txt").read_text().strip() == name  # keep_workspaces = "all"
        board.db.dispose()
    assert results == {"alpha": "clean", "beta": "clean"}, "beta's task #1 read a file left by alpha's"


async def test_each_retry_starts_clean_and_failed_workspaces_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    board = _board(tmp_path, "gamma", exit_status=3)
    (tid,) = add_tasks(board, 1, "agent", max_attempts=2)
    async with running(board, workspace_root=root):
        await wait_for(lambda: all_in(board, "failed"), what="failed")
    task = board.get(tid)
    assert task.attempts == 2 and "clean" in (task.error or "")
    board_root = root / workspaces.board_key(board.db.url)
    kept = sorted(p.name for p in board_root.iterdir())
    assert kept == [f"task-{tid}-run-{r.id}" for r in run_rows(board, tid)], "failed runs are kept"
    for path in board_root.iterdir():
        assert (path / "note.txt").read_text().strip() == "gamma"
    board.db.dispose()


async def test_succeeded_removed_and_old_or_orphaned_swept(tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    board = _board(tmp_path, "delta")
    board_root = root / workspaces.board_key(board.db.url)
    # left by a crashed dispatcher: a run that is over (lost) and one that no longer exists
    (board_root / "task-7-run-900").mkdir(parents=True)
    stale = board_root / "task-8-run-901"
    stale.mkdir()
    old = time.time() - 8 * 86400
    os.utime(stale, (old, old))
    (tid,) = add_tasks(board, 1, "agent")
    async with running(board, workspace_root=root):
        await wait_for(lambda: all_in(board, "done"), what="done")
        await wait_for(lambda: not any(board_root.iterdir()), what="workspaces swept")
    assert board.get(tid).result == "clean"
    board.db.dispose()


def test_board_keys_differ_per_database_and_hide_passwords() -> None:
    a = workspaces.board_key("postgresql+psycopg://u:secret@db/one")
    b = workspaces.board_key("postgresql+psycopg://u:other@db/one")
    c = workspaces.board_key("postgresql+psycopg://u:secret@db/two")
    assert a == b and a != c and "secret" not in a and a.startswith("one-")
    assert workspaces.board_key("sqlite:////tmp/x/board.db").startswith("board-")
