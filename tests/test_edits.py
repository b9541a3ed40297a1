"""The operator's day: edit, bulk cancel/retry/block by filter, purge of old finished work.
Through the executor (the one code path of every front end), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask
from lanewarden.core.claims import ClaimKernel
from lanewarden.core.clock import utcnow
from lanewarden.core.errors import AccessDenied, Conflict, NotFound, UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.schema import events, runs, tasks
from sqlalchemy import func, select, update

from tests.conftest import ADMIN
from tests.helpers import snapshot

OPERATOR = Actor(id="slack:U1", role="operator")
VIEWER = Actor(id="slack:U2", role="viewer")


def run(board: Board, line: str, actor: Actor = ADMIN):
    return Executor(board).execute(parse(line), actor)


def test_edit_changes_what_it_is_told_and_records_it(board: Board) -> None:
    task = board.add(NewTask(title="draft"), ADMIN.id)
    result = run(board, f'edit {task.id} --title "  Summarize   the May logs " --priority 7', OPERATOR)
    edited = result.task
    assert (edited.title, edited.priority) == ("Summarize the May logs", 7)
    detail = board.show(task.id)
    last = detail.events[-1]
    assert last.kind == "edited" and last.actor == OPERATOR.id and "priority 0 -> 7" in last.message


def test_edit_refuses_what_add_refuses_and_changes_nothing(board: Board) -> None:
    task = board.add(NewTask(title="draft"), ADMIN.id)
    before = snapshot(board)
    for line in (
        f"edit {task.id}",
        f'edit {task.id} --title " "',
        f"edit {task.id} --title {'x' * 201}",
        f"edit {task.id} --priority 2000000",
        f"edit {task.id} --profile ghost",
        "edit 999 --priority 1",
    ):
        with pytest.raises((UsageError, NotFound)):
            run(board, line)
    assert snapshot(board) == before
    with pytest.raises(AccessDenied):
        run(board, f"edit {task.id} --priority 1", VIEWER)
    assert board.get(task.id).priority == 0


def test_a_running_task_keeps_what_its_agent_read_but_its_priority_may_change(board: Board) -> None:
    task = board.add(NewTask(title="running"), ADMIN.id)
    (claim,) = ClaimKernel(board, "d1").claim(1)
    assert claim.task_id == task.id
    for flag in ('--title "other"', '--body "other"', "--profile researcher"):
        with pytest.raises(Conflict, match="is running"):
            run(board, f"edit {task.id} {flag}")
    assert run(board, f"edit {task.id} --priority 3").task.priority == 3
    assert board.get(task.id).title == "running"


def test_bulk_retry_says_which_first_and_changes_only_with_yes(board: Board) -> None:
    ids = [board.add(NewTask(title=f"t{i}"), ADMIN.id).id for i in range(3)]
    other = board.add(NewTask(title="elsewhere", profile="researcher"), ADMIN.id).id
    with board.db.write() as conn:
        conn.execute(update(tasks).where(tasks.c.id.in_([*ids, other])).values(status="failed"))
    before = snapshot(board)
    dry = run(board, "retry --status failed --profile default", OPERATOR)
    assert dry.data["ids"] == ids and "add --yes" in dry.message
    assert snapshot(board) == before
    done = run(board, "retry --status failed --profile default --yes", OPERATOR)
    assert done.data["ids"] == ids
    assert {board.get(i).status for i in ids} == {"ready"} and board.get(other).status == "failed"
    cancelled = run(board, "cancel --status ready --yes", OPERATOR)
    assert cancelled.data["ids"] == ids
    with pytest.raises(UsageError, match="needs a task id"):
        run(board, "block")
    with pytest.raises(AccessDenied):
        run(board, "cancel --status failed --yes", VIEWER)


def test_purge_deletes_only_old_finished_tasks_no_parent_of_open_work(board: Board) -> None:
    old_done = board.add(NewTask(title="old done"), ADMIN.id).id
    old_parent = board.add(NewTask(title="old parent of open work"), ADMIN.id).id
    child = board.add(NewTask(title="child", column="backlog", parents=[old_parent]), ADMIN.id).id
    recent = board.add(NewTask(title="recently done"), ADMIN.id).id
    month_ago = utcnow() - timedelta(days=40)
    with board.db.write() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_([old_done, old_parent]))
            .values(status="done", finished_at=month_ago)
        )
        conn.execute(update(tasks).where(tasks.c.id == recent).values(status="done", finished_at=utcnow()))
    before = snapshot(board)
    dry = run(board, "purge --older-than 30d")
    assert dry.data["ids"] == [old_done] and snapshot(board) == before
    with pytest.raises(AccessDenied):
        run(board, "purge --older-than 30d --yes", OPERATOR)
    with pytest.raises(UsageError, match="at least a day"):
        run(board, "purge --older-than 1h --yes")
    gone = run(board, "purge --older-than 30d --yes")
    assert gone.data["ids"] == [old_done]
    with board.db.read() as conn:
        left = set(conn.execute(select(tasks.c.id)).scalars())
        orphans = conn.execute(select(func.count()).where(events.c.task_id == old_done)).scalar_one()
        orphan_runs = conn.execute(select(func.count()).where(runs.c.task_id == old_done)).scalar_one()
    assert left == {old_parent, child, recent} and orphans == 0 and orphan_runs == 0
