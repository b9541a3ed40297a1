"""Board operations and their rules, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from lanewarden.core.board import Board, NewTask, TaskFilter
from lanewarden.core.clock import utcnow
from lanewarden.core.errors import Conflict, NotFound, UsageError
from lanewarden.core.schema import BODY_MAX, TITLE_MAX

from tests.helpers import event_kinds, snapshot

ACTOR = "cli:tester"


def add(board: Board, title: str = "t", **kw) -> int:
    return board.add(NewTask(title=title, **kw), ACTOR).id


def test_add_defaults_and_event(board: Board) -> None:
    task = board.add(NewTask(title="  Summarize   the April logs "), ACTOR)
    assert task.title == "Summarize the April logs"
    assert (task.status, task.profile, task.priority, task.attempts, task.max_attempts) == (
        "ready",
        "default",
        0,
        0,
        3,
    )
    assert task.created_by == ACTOR
    assert event_kinds(board, task.id) == ["created"]


def test_list_filters_order_and_limit(board: Board) -> None:
    low = add(board, "low", priority=1)
    high = add(board, "high", priority=5)
    back = add(board, "back", column="backlog")
    other = add(board, "other", profile="researcher")
    ready = board.list_tasks(TaskFilter(statuses=("ready",)))
    assert [t.id for t in ready] == [high, low, other]
    assert [t.id for t in board.list_tasks(TaskFilter(statuses=("ready",), limit=1))] == [high]
    assert [t.id for t in board.list_tasks(TaskFilter(statuses=("backlog",)))] == [back]
    assert [t.id for t in board.list_tasks(TaskFilter(profile="researcher"))] == [other]
    assert len(board.list_tasks(TaskFilter(limit=0))) == 4  # 0 lists all
    assert board.list_page(TaskFilter(limit=3)) == (board.list_tasks(TaskFilter(limit=3)), True)
    assert board.list_page(TaskFilter(limit=4))[1] is False
    with pytest.raises(UsageError, match="--limit"):
        board.list_tasks(TaskFilter(limit=-1))


def test_promote_backlog_to_ready_then_release(board: Board) -> None:
    tid = add(board, column="backlog")
    assert board.promote(tid, "ready", ACTOR).status == "ready"
    released = board.promote(tid, "active", ACTOR)
    assert (released.status, released.released) == ("ready", True)
    assert board.promote(tid, "active", ACTOR) == released  # a no-op: the cron wrapper may repeat
    with pytest.raises(Conflict, match="only a backlog task"):
        board.promote(tid, "ready", ACTOR)
    assert event_kinds(board, tid) == ["created", "promoted", "released"]


def test_release_refused_until_parents_done(board: Board) -> None:
    parent = add(board, "parent", column="backlog")
    child = add(board, "child", column="backlog", parents=[parent])
    before = snapshot(board)
    with pytest.raises(Conflict, match=rf"parents are done: #{parent} \(backlog\)"):
        board.promote(child, "active", ACTOR)
    assert snapshot(board) == before
    board.move(parent, "done", ACTOR)
    assert board.promote(child, "active", ACTOR).released


def test_promote_batch_respects_max_order_and_parents(board: Board) -> None:
    parent = add(board, "parent", column="backlog")
    ids = [add(board, f"t{i}", column="backlog", priority=i) for i in range(5)]
    blocked_child = add(board, "child", column="backlog", priority=100, parents=[parent])
    moved = board.promote_batch("backlog", "ready", 3, ACTOR)
    assert [t.id for t in moved] == [blocked_child, ids[4], ids[3]]
    released = board.promote_batch("ready", "active", 10, ACTOR)
    # the child waits for its parent, so it is never released
    assert [t.id for t in released] == [ids[4], ids[3]]
    assert all(t.released for t in released)
    assert board.promote_batch("ready", "active", 10, ACTOR) == []
    with pytest.raises(UsageError, match="not ahead"):
        board.promote_batch("ready", "ready", 1, ACTOR)
    with pytest.raises(UsageError, match="between 1 and"):
        board.promote_batch("backlog", "ready", 0, ACTOR)


def test_move_rules(board: Board) -> None:
    tid = add(board)
    assert board.move(tid, "backlog", ACTOR).status == "backlog"
    assert board.move(tid, "done", ACTOR).status == "done"
    with pytest.raises(Conflict, match="final"):
        board.move(tid, "ready", ACTOR)


def test_block_unblock_returns_to_previous_column(board: Board) -> None:
    tid = add(board, column="backlog")
    assert board.block(tid, ACTOR, "vendor").status == "blocked"
    assert board.unblock(tid, ACTOR).status == "backlog"
    with pytest.raises(Conflict, match="not blocked"):
        board.unblock(tid, ACTOR)
    assert event_kinds(board, tid) == ["created", "blocked", "unblocked"]


def test_cancel_and_retry(board: Board) -> None:
    tid = add(board)
    assert board.cancel(tid, ACTOR).status == "cancelled"
    with pytest.raises(Conflict, match="already cancelled"):
        board.cancel(tid, ACTOR)
    again = board.retry(tid, ACTOR)
    assert (again.status, again.attempts, again.error) == ("ready", 0, None)
    with pytest.raises(Conflict, match="only failed or cancelled"):
        board.retry(tid, ACTOR)


def test_links_refuse_cycles_and_self(board: Board) -> None:
    a, b, c = add(board, "a"), add(board, "b"), add(board, "c")
    board.link(a, b, ACTOR)
    board.link(b, c, ACTOR)
    before = snapshot(board)
    with pytest.raises(Conflict, match="cycle"):
        board.link(c, a, ACTOR)
    with pytest.raises(Conflict, match="itself"):
        board.link(a, a, ACTOR)
    with pytest.raises(Conflict, match="already a parent"):
        board.link(a, b, ACTOR)
    assert snapshot(board) == before
    board.unlink(a, b, ACTOR)
    with pytest.raises(NotFound):
        board.unlink(a, b, ACTOR)
    board.link(c, a, ACTOR)  # no longer a cycle once a -> b is gone


def test_show_explains_waiting(board: Board) -> None:
    parent = add(board, "parent")
    child = add(board, "child", parents=[parent], not_before=utcnow() + timedelta(hours=1))
    board.cancel(parent, ACTOR)
    board.pause("profile", "default", ACTOR)
    reasons = board.show(child).waiting_on
    assert any(f"parent #{parent} is cancelled" in r for r in reasons)
    assert any("not before" in r for r in reasons)
    assert any("profile default is paused" in r for r in reasons)


def test_comment_recorded(board: Board) -> None:
    tid = add(board)
    board.comment(tid, "logs are in /srv", "slack:U1")
    events = board.show(tid).events
    assert (events[-1].kind, events[-1].actor, events[-1].message) == (
        "commented",
        "slack:U1",
        "logs are in /srv",
    )


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"title": "   "}, "needs a title"),
        ({"title": "x" * (TITLE_MAX + 1)}, "limit is 200"),
        ({"title": "t", "body": "x" * (BODY_MAX + 1)}, "limit is 20000"),
        ({"title": "t", "profile": "nope"}, "no profile 'nope'"),
        ({"title": "t", "column": "active"}, "backlog or ready"),
        ({"title": "t", "parents": [999]}, "no task #999"),
        ({"title": "t", "max_attempts": 0}, "max-attempts must be between"),
        ({"title": "t", "priority": 10**9}, "priority must be between"),
    ],
)
def test_bad_add_changes_nothing(board: Board, kwargs: dict, error: str) -> None:
    add(board, "existing")
    before = snapshot(board)
    with pytest.raises((UsageError, NotFound), match=error):
        board.add(NewTask(**kwargs), ACTOR)
    assert snapshot(board) == before


def test_unknown_ids(board: Board) -> None:
    before = snapshot(board)
    for op in (
        lambda: board.show(42),
        lambda: board.promote(42, "ready", ACTOR),
        lambda: board.cancel(42, ACTOR),
        lambda: board.comment(42, "x", ACTOR),
    ):
        with pytest.raises(NotFound, match="no task #42"):
            op()
    assert snapshot(board) == before


def test_caps_and_pauses_persist(board: Board) -> None:
    board.set_cap("gateway", "gpu", 1, ACTOR)
    board.set_cap("board", None, 9, ACTOR)
    limits, _ = board.limits()
    assert limits.gateways["gpu"].cap == 1 and limits.board_cap == 9
    board.reset_cap("gateway", "gpu", ACTOR)
    limits, _ = board.limits()
    assert limits.gateways["gpu"].cap == 2
    assert board.pause("gateway", "gpu", ACTOR) is True
    assert board.pause("gateway", "gpu", ACTOR) is False
    assert board.limits()[0].is_paused("gateway", "gpu")
    assert board.resume("gateway", "gpu", ACTOR) is True
    with pytest.raises(NotFound, match="no gateway 'nope'"):
        board.set_cap("gateway", "nope", 1, ACTOR)
    with pytest.raises(UsageError, match="between 0 and"):
        board.set_cap("board", None, -1, ACTOR)
