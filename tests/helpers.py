"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

from typing import Any

from lanewarden.core.board import Board
from lanewarden.core.schema import metadata
from sqlalchemy import select


def snapshot(board: Board) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that a refused operation changed nothing."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with board.db.read() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns)
            found[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return found


def event_kinds(board: Board, task_id: int) -> list[str]:
    return [e.kind for e in board.show(task_id, history=1000).events]
