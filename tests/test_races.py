"""Concurrent writers on PostgreSQL: links cannot make a cycle, caps and pauses cannot collide.

Each writer is a separate board (its own engine, so its own connections), started
together behind a barrier so the transactions really overlap in the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.errors import Conflict
from lanewarden.core.schema import cap_overrides, pauses, task_links
from sqlalchemy import func, select

from tests.conftest import make_config, pg_url

pytestmark = pytest.mark.postgres


def _together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at the same moment on threads; return each result or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.fixture
def boards(pg_schema: str) -> Any:
    config = make_config(pg_url(pg_schema))
    opened = [open_board(config) for _ in range(4)]
    yield opened
    for b in opened:
        b.db.dispose()


def _has_cycle(board: Board) -> bool:
    with board.db.read() as conn:
        edges = conn.execute(select(task_links.c.parent_id, task_links.c.child_id)).all()
    children: dict[int, list[int]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)

    def reaches(start: int, target: int, seen: set[int]) -> bool:
        for nxt in children.get(start, []):
            if nxt == target or (nxt not in seen and (seen.add(nxt) or reaches(nxt, target, seen))):
                return True
        return False

    return any(reaches(node, node, set()) for node in children)


def test_concurrent_links_never_make_a_cycle(boards: list[Board]) -> None:
    """With 2->3 and 4->1 in place, `link 1 2` and `link 3 4` at once would close 1->2->3->4->1."""
    a, b = boards[0], boards[1]
    for _ in range(10):
        ids = [a.add(NewTask(title=f"t{i}"), "cli:t").id for i in range(4)]
        one, two, three, four = ids
        a.link(two, three, "cli:t")
        a.link(four, one, "cli:t")
        results = _together(
            [lambda o=one, t=two: a.link(o, t, "cli:a"), lambda t=three, f=four: b.link(t, f, "cli:b")]
        )
        refused = [r for r in results if isinstance(r, Exception)]
        assert all(isinstance(r, Conflict) for r in refused), results
        assert len(refused) == 1, f"exactly one of the two links must be refused: {results}"
        assert not _has_cycle(a)


def test_opposite_links_do_not_deadlock(boards: list[Board]) -> None:
    """`link 1 2` and `link 2 1` at once: one wins, the other is a cycle, neither a database error."""
    a, b = boards[0], boards[1]
    for _ in range(10):
        one = a.add(NewTask(title="x"), "cli:t").id
        two = a.add(NewTask(title="y"), "cli:t").id
        results = _together(
            [lambda o=one, t=two: a.link(o, t, "cli:a"), lambda o=one, t=two: b.link(t, o, "cli:b")]
        )
        assert sum(r is None for r in results) == 1, results
        assert all(r is None or isinstance(r, Conflict) for r in results), results


def test_concurrent_caps_set_and_pause(boards: list[Board]) -> None:
    """Upserts: many people setting the same cap or pausing the same gateway at once all succeed."""
    for round_no in range(5):
        value = 3 + round_no
        results = _together(
            [
                lambda b=b, v=value + i, who=f"cli:{i}": b.set_cap("gateway", "gpu", v, who)
                for i, b in enumerate(boards)
            ]
        )
        assert all(r is None for r in results), results
        with boards[0].db.read() as conn:
            assert conn.execute(select(func.count()).select_from(cap_overrides)).scalar_one() == 1
        results = _together([lambda b=b: b.pause("gateway", "gpu", "cli:p") for b in boards])
        assert all(isinstance(r, bool) for r in results), results
        assert sum(results) == 1, "exactly one pause takes effect; the others find it paused"
        results = _together([lambda b=b: b.resume("gateway", "gpu", "cli:p") for b in boards])
        assert all(isinstance(r, bool) for r in results), results
        assert sum(results) == 1
        with boards[0].db.read() as conn:
            assert conn.execute(select(func.count()).select_from(pauses)).scalar_one() == 0
        results = _together([lambda b=b: b.reset_cap("gateway", "gpu", "cli:r") for b in boards])
        assert all(r is None for r in results), results
