"""Dispatch throughput and delay: one process, SQLite, a no-op runner.

1. Throughput: N ready tasks, caps wide open; lifecycles per second from the first
   claim to the last completion (claim, run, record: the whole life of a task).
2. Delay: with slots free and the dispatcher idle, tasks are added one at a time;
   the delay is from the moment a task became ready (its commit) to the moment a
   worker started it. This is the event-driven path, not the poll.
Targets: >= 1,000 lifecycles/s; p99 delay <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import parse_config
from lanewarden.core.dispatcher import Dispatcher
from lanewarden.core.schema import runs, tasks
from sqlalchemy import func, select

from bench.common import insert_ready_tasks, percentile, save, table


def config_for(url: str, active: int) -> dict:
    return {
        "board": {"url": url},
        "kanban": {
            "dispatcher": {
                "max_active_tasks": active,
                "poll_interval_seconds": 5,
                "max_claims_per_transaction": 64,
            },
            "workers": {"profile": "noop", "max_parallel_per_profile": active},
        },
        "profiles": {"noop": {"runner": "noop"}},
        "http": {"listen": None},
    }


async def throughput(url: str, count: int, active: int) -> dict:
    board = open_board(parse_config(config_for(url, active)))
    insert_ready_tasks(board, count)
    dispatcher = Dispatcher(board)
    await dispatcher.start()
    while True:
        with board.db.read() as conn:
            done = conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one()
        if done == count:
            break
        await asyncio.sleep(0.05)
    await dispatcher.drain(timeout=1)
    with board.db.read() as conn:
        first, last = conn.execute(select(func.min(runs.c.claimed_at), func.max(runs.c.finished_at))).one()
    seconds = (last - first).total_seconds()
    board.db.dispose()
    return {"tasks": count, "seconds": seconds, "lifecycles_per_second": count / seconds}


async def delay(url: str, count: int, gap: float) -> dict:
    board = open_board(parse_config(config_for(url, 64)))
    dispatcher = Dispatcher(board)
    await dispatcher.start()
    for i in range(count):
        await asyncio.to_thread(board.add, NewTask(title=f"d{i}"), "bench")
        await asyncio.sleep(gap)
    while True:
        with board.db.read() as conn:
            if conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one() == count:
                break
        await asyncio.sleep(0.05)
    await dispatcher.drain(timeout=1)
    with board.db.read() as conn:
        rows = conn.execute(select(runs.c.ready_at, runs.c.claimed_at, runs.c.started_at)).all()
    board.db.dispose()
    to_claim = [(r.claimed_at - r.ready_at).total_seconds() * 1000 for r in rows]
    to_start = [(r.started_at - r.ready_at).total_seconds() * 1000 for r in rows]
    return {
        "tasks": count,
        "claim_p50_ms": percentile(to_claim, 50),
        "claim_p99_ms": percentile(to_claim, 99),
        "start_p50_ms": percentile(to_start, 50),
        "start_p99_ms": percentile(to_start, 99),
        "start_max_ms": max(to_start),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--active", type=int, default=64)
    parser.add_argument("--delay-tasks", type=int, default=300)
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["dispatch"] else sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="lw-dispatch-"))
    tp = asyncio.run(throughput(f"sqlite:///{work / 'tp.db'}", args.tasks, args.active))
    dl = asyncio.run(delay(f"sqlite:///{work / 'delay.db'}", args.delay_tasks, 0.01))
    print(
        table(
            ["measure", "value", "target"],
            [
                ("lifecycles/s (no-op runner, SQLite, 1 process)", tp["lifecycles_per_second"], ">= 1,000"),
                ("ready -> started p50 (ms)", dl["start_p50_ms"], ""),
                ("ready -> started p99 (ms)", dl["start_p99_ms"], "<= 20"),
                ("ready -> claimed p99 (ms)", dl["claim_p99_ms"], ""),
            ],
        )
    )
    result = {"throughput": tp, "delay": dl, "active_cap": args.active}
    save("dispatch", result)
    return result


if __name__ == "__main__":
    main()
