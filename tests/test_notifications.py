"""Which channels hear about a task, and what the thread updates say."""

from __future__ import annotations

from lanewarden.bot.slack_app.blocks import update_message
from lanewarden.core.board import Board, NewTask
from lanewarden.core.claims import ClaimKernel
from lanewarden.core.schema import outbox
from sqlalchemy import select


def test_updates_name_the_person_not_the_dispatcher(board: Board) -> None:
    task = board.add(NewTask(title="t", origin="slack:C0ORIGIN1"), "slack:U1")
    (claim,) = ClaimKernel(board, "host:123:abcd").claim(1)
    board.block(task.id, "slack:U2", "needs a human")
    with board.db.read() as conn:
        rows = conn.execute(select(outbox).where(outbox.c.kind == "update").order_by(outbox.c.id)).all()
    assert [(r.channel, r.payload["event"]) for r in rows] == [
        ("C0ORIGIN1", "started"),
        ("C0ORIGIN1", "blocked"),
    ]
    started, blocked = (update_message(board.get(task.id), r.payload)[0] for r in rows)
    assert "(by" not in started  # a dispatcher id means nothing to people
    assert blocked.endswith("blocked: needs a human (by slack:U2)")
    assert claim.task_id == task.id
