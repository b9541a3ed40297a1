"""Random operation sequences against the board; the invariants must hold after each step.

Invariants: statuses and runs are legal, a child is never dispatchable (or released)
before all its parents are done, every accepted change left an event, no link points
at a missing task, and refused operations change nothing.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.errors import LanewardenError
from lanewarden.core.schema import events, task_links, tasks
from lanewarden.core.statuses import TASK_STATUSES
from sqlalchemy import func, select

from tests.conftest import make_config
from tests.helpers import snapshot

ACTOR = "prop:tester"


class BoardMachine(RuleBasedStateMachine):
    url: str = ""

    @initialize()
    def setup(self) -> None:
        self.board: Board = open_board(make_config(self.url))
        with self.board.db.write() as conn:
            for table in (events, task_links, tasks):
                conn.execute(table.delete())
        self.ids: list[int] = []
        self.accepted = 0

    def teardown(self) -> None:
        self.board.db.dispose()

    def _try(self, op) -> None:
        before = snapshot(self.board)
        before_events = self._event_count()
        try:
            op()
        except LanewardenError:
            assert snapshot(self.board) == before, "a refused operation changed the board"
            return
        self.accepted += 1
        assert self._event_count() > before_events, "an accepted change left no event"

    def _event_count(self) -> int:
        with self.board.db.read() as conn:
            return conn.execute(select(func.count()).select_from(events)).scalar_one()

    ids_strategy = st.integers(min_value=0, max_value=30)

    @rule(column=st.sampled_from(["backlog", "ready"]), parents=st.lists(ids_strategy, max_size=3))
    def add(self, column: str, parents: list[int]) -> None:
        parent_ids = [self.ids[p % len(self.ids)] for p in parents] if self.ids else []

        def op() -> None:
            self.ids.append(self.board.add(NewTask(title="t", column=column, parents=parent_ids), ACTOR).id)

        self._try(op)

    def _pick(self, i: int) -> int:
        return self.ids[i % len(self.ids)] if self.ids else 999

    @precondition(lambda self: self.ids)
    @rule(i=ids_strategy, column=st.sampled_from(["ready", "active"]))
    def promote(self, i: int, column: str) -> None:
        def op() -> None:
            task_id = self._pick(i)
            before = self.board.get(task_id) if task_id in self.ids else None
            after = self.board.promote(task_id, column, ACTOR)
            if before is not None and after == before:
                # releasing a released or active task is a no-op that succeeds: nothing may change
                raise LanewardenError("no-op")

        self._try(op)

    @precondition(lambda self: self.ids)
    @rule(
        src=st.sampled_from(["backlog", "ready"]),
        dst=st.sampled_from(["ready", "active"]),
        n=st.integers(1, 4),
    )
    def promote_batch(self, src: str, dst: str, n: int) -> None:
        def op() -> None:
            if not self.board.promote_batch(src, dst, n, ACTOR):
                raise LanewardenError("nothing")  # an empty batch is a no-op: nothing may change

        self._try(op)

    @precondition(lambda self: self.ids)
    @rule(i=ids_strategy, column=st.sampled_from(["backlog", "ready", "done"]))
    def move(self, i: int, column: str) -> None:
        self._try(lambda: self.board.move(self._pick(i), column, ACTOR))

    @precondition(lambda self: self.ids)
    @rule(i=ids_strategy, op=st.sampled_from(["block", "unblock", "cancel", "retry"]))
    def single(self, i: int, op: str) -> None:
        self._try(lambda: getattr(self.board, op)(self._pick(i), ACTOR))

    @precondition(lambda self: len(self.ids) >= 2)
    @rule(a=ids_strategy, b=ids_strategy, unlink=st.booleans())
    def link(self, a: int, b: int, unlink: bool) -> None:
        op = self.board.unlink if unlink else self.board.link
        self._try(lambda: op(self._pick(a), self._pick(b), ACTOR))

    @invariant()
    def board_is_consistent(self) -> None:
        if not hasattr(self, "board"):
            return
        with self.board.db.read() as conn:
            rows = {r.id: r for r in conn.execute(select(tasks))}
            links = conn.execute(select(task_links)).all()
        assert all(r.status in TASK_STATUSES for r in rows.values())
        assert all(r.status != "active" for r in rows.values()), "only the dispatcher makes tasks active"
        for link in links:
            assert link.parent_id in rows and link.child_id in rows, "orphan link"
        parents_of: dict[int, list[int]] = {}
        for link in links:
            parents_of.setdefault(link.child_id, []).append(link.parent_id)
        for tid, row in rows.items():
            if row.released:
                assert row.status == "ready"
                # released means it may start now: every parent was done when it was released,
                # and a done task never leaves done
                assert all(rows[p].status == "done" for p in parents_of.get(tid, []))
        # no cycles: following parent links from any task terminates
        for start in rows:
            seen, stack = set(), [start]
            while stack:
                node = stack.pop()
                for parent in parents_of.get(node, []):
                    assert parent != start, "cycle"
                    if parent not in seen:
                        seen.add(parent)
                        stack.append(parent)


def _run(url: str, examples: int) -> None:
    BoardMachine.url = url
    BoardMachine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    BoardMachine.TestCase().runTest()


def test_random_operations_sqlite(tmp_path) -> None:
    _run(f"sqlite:///{tmp_path / 'prop.db'}", int(os.environ.get("LANEWARDEN_PROPERTY_EXAMPLES", "40")))


def test_random_operations_postgres(pg_schema: str) -> None:
    from tests.conftest import pg_url

    _run(pg_url(pg_schema), 15)
