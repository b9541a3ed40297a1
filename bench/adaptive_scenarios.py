"""Adaptive limits in situations a single sweep does not show.

* **two gateways**: one board, one dispatcher, two simulated servers with different
  knees (2 and 5), each with its own profile and ``adaptive = true`` under a cap of 50:
  each limit must be found on its own.
* **slower halfway**: one simulated server (knee 4); when half the tasks are done,
  another tenant arrives (a client of its own keeping 3 requests in flight on the same
  server for ``--tenant-seconds``) and then leaves: the limit should follow the server
  down and come back up.

Both run the simulator in a process of its own and the monitor beside the dispatcher,
as ``serve`` does; they report the limit history with its reasons.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from lanewarden.bot.simulator import ServerModel
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import parse_config
from lanewarden.core.dispatcher import Dispatcher
from lanewarden.core.gateways import GatewayMonitor
from lanewarden.core.schema import gateway_limit_history, tasks
from sqlalchemy import func, select

from bench.common import save
from bench.gateway_protection import start_simulator

SHAPE = {"profile": "batching", "token_ms": 20.0, "output_tokens": (24, 40), "max_queue": 64}


def config_for(url: str, servers: dict[str, str]) -> Any:
    return parse_config(
        {
            "board": {"url": url},
            "kanban": {
                "dispatcher": {
                    "max_active_tasks": 100,
                    "poll_interval_seconds": 1,
                    "retry_backoff_seconds": 0,
                },
                "workers": {"profile": next(iter(servers)), "max_parallel_per_profile": 50},
            },
            "gateways": {
                name: {
                    "base_url": base_url,
                    "kind": "vllm",
                    "max_concurrency": 50,
                    "timeout_seconds": 30,
                    "adaptive": True,
                    "probe_interval_seconds": 2,
                }
                for name, base_url in servers.items()
            },
            "profiles": {
                name: {"gateway": name, "model": "bench", "request_params": {"max_tokens": 40}}
                for name in servers
            },
            "scheduler": {"enabled": False},
            "http": {"listen": None},
        }
    )


async def run_board(config: Any, per_profile: int, during: Any = None) -> list[dict[str, Any]]:
    """Drop the tasks, run the dispatcher and monitor until all are done; the limit history."""
    board = open_board(config)
    for profile in config.profiles:
        for i in range(per_profile):
            board.add(
                NewTask(title=f"Summarize shard {i} for {profile}", profile=profile, max_attempts=1), "bench"
            )
    dispatcher = Dispatcher(board)
    await dispatcher.start()
    monitor = asyncio.create_task(GatewayMonitor(board.db, dict(config.gateways)).run())
    side = asyncio.create_task(during(board)) if during else None
    started = time.time()
    try:
        while True:
            with board.db.read() as conn:
                left = conn.execute(
                    select(func.count()).where(tasks.c.status.in_(("ready", "active")))
                ).scalar_one()
            if not left:
                break
            await asyncio.sleep(0.25)
    finally:
        monitor.cancel()
        if side is not None:
            side.cancel()
        await dispatcher.drain(timeout=5)
    with board.db.read() as conn:
        history = conn.execute(select(gateway_limit_history).order_by(gateway_limit_history.c.id)).all()
    board.db.dispose()
    return [
        {
            "gateway": h.gateway,
            "t": round(h.at.timestamp() - started, 1),
            "limit": h.current_limit,
            "reason": h.reason,
        }
        for h in history
    ]


async def two_gateways(work: Path, per_profile: int) -> dict[str, Any]:
    small = await start_simulator("knee-2", ServerModel(knee=2, **SHAPE), [], 0, work)
    large = await start_simulator("knee-5", ServerModel(knee=5, **SHAPE), [], 0, work)
    try:
        config = config_for(
            f"sqlite:///{work / 'two.db'}", {"knee2": small.base_url, "knee5": large.base_url}
        )
        history = await run_board(config, per_profile)
    finally:
        await small.stop()
        await large.stop()
    settled = {g: [h["limit"] for h in history if h["gateway"] == g][-1:] for g in ("knee2", "knee5")}
    return {"history": history, "final_limits": {g: v[0] if v else None for g, v in settled.items()}}


async def slower_halfway(work: Path, count: int, tenant_seconds: float) -> dict[str, Any]:
    sim = await start_simulator("knee-4", ServerModel(knee=4, **SHAPE), [], 0, work)
    marks: dict[str, float] = {}

    async def tenant(board: Any) -> None:
        while True:  # wait until half the tasks are done
            with board.db.read() as conn:
                done = conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one()
            if done >= count // 2:
                break
            await asyncio.sleep(0.5)
        marks["arrived"] = time.time()
        deadline = time.monotonic() + tenant_seconds
        body = {"model": "x", "messages": [{"role": "user", "content": "another tenant"}], "max_tokens": 40}

        async def one_stream(client: httpx.AsyncClient) -> None:
            while time.monotonic() < deadline:
                await client.post(f"{sim.base_url}/chat/completions", json=body, timeout=60)

        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(one_stream(client) for _ in range(3)))
        marks["left"] = time.time()

    try:
        config = config_for(f"sqlite:///{work / 'slower.db'}", {"gw": sim.base_url})
        started = time.time()
        history = await run_board(config, count, tenant)
    finally:
        await sim.stop()
    return {
        "history": history,
        "tenant_arrived_s": round(marks["arrived"] - started, 1) if "arrived" in marks else None,
        "tenant_left_s": round(marks["left"] - started, 1) if "left" in marks else None,
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--which", default="two_gateways,slower_halfway")
    parser.add_argument("--tasks", type=int, default=150, help="tasks per profile (two gateways)")
    parser.add_argument("--slower-tasks", type=int, default=500)
    parser.add_argument("--tenant-seconds", type=float, default=40.0)
    args = parser.parse_args(sys.argv[2:] if sys.argv[1:2] == ["adaptive_scenarios"] else sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="lw-scenarios-"))
    result: dict[str, Any] = {}
    if "two_gateways" in args.which:
        result["two_gateways"] = asyncio.run(two_gateways(work, args.tasks))
        print("two gateways:", result["two_gateways"]["final_limits"], flush=True)
        for h in result["two_gateways"]["history"]:
            print(f"  {h['t']:>6}s {h['gateway']:<6} {h['limit']:>3}  {h['reason']}")
    if "slower_halfway" in args.which:
        result["slower_halfway"] = asyncio.run(slower_halfway(work, args.slower_tasks, args.tenant_seconds))
        run = result["slower_halfway"]
        print(
            f"slower halfway: tenant from {run['tenant_arrived_s']}s to {run['tenant_left_s']}s", flush=True
        )
        for h in run["history"]:
            print(f"  {h['t']:>6}s {h['limit']:>3}  {h['reason']}")
    save("adaptive_scenarios", result)
    return result


if __name__ == "__main__":
    main()
