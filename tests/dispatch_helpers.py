"""Helpers for dispatcher tests: configs, a running dispatcher, waiting for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.dispatcher import Dispatcher
from lanewarden.core.schema import runs, tasks
from sqlalchemy import select

from tests.conftest import make_config

FAST = {
    "heartbeat_seconds": 0.2,
    "lease_seconds": 1.0,
    "poll_interval_seconds": 0.5,
    "retry_backoff_seconds": 0.0,
    "drain_timeout_seconds": 5,
}


def dispatch_config(
    url: str,
    *,
    gateways: dict[str, Any] | None = None,
    profiles: dict[str, Any] | None = None,
    dispatcher: dict[str, Any] | None = None,
    **extra: Any,
) -> LanewardenConfig:
    return make_config(
        url,
        kanban={
            "dispatcher": {**FAST, "max_active_tasks": 4, **(dispatcher or {})},
            "workers": {"profile": next(iter(profiles or {"default": None}))},
        },
        gateways=gateways or {},
        profiles=profiles or {"default": {"runner": "noop"}},
        **extra,
    )


@asynccontextmanager
async def running(board: Board, **kw: Any) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(board, **kw)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.drain(timeout=2)


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll (in a thread, the predicate may query the board) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def statuses(board: Board) -> dict[int, str]:
    with board.db.read() as conn:
        return {r.id: r.status for r in conn.execute(select(tasks.c.id, tasks.c.status))}


def all_in(board: Board, *wanted: str) -> bool:
    found = statuses(board)
    return bool(found) and all(s in wanted for s in found.values())


def run_rows(board: Board, task_id: int | None = None) -> list[Any]:
    query = select(runs).order_by(runs.c.id)
    if task_id is not None:
        query = query.where(runs.c.task_id == task_id)
    with board.db.read() as conn:
        return list(conn.execute(query))


def add_tasks(board: Board, n: int, profile: str | None = None, **kw: Any) -> list[int]:
    return [board.add(NewTask(title=f"[task {i}]", profile=profile, **kw), "test").id for i in range(n)]


def new_board(config: LanewardenConfig) -> Board:
    return open_board(config)
