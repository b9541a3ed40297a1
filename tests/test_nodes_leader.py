"""Two real ``serve`` processes on one board: only the leader scrapes the node exporters,
and when it dies the new leader carries on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lanewarden.core.board import open_board
from lanewarden.core.config import load_config
from lanewarden.core.db import Database
from lanewarden.core.schema import leases, node_readings
from sqlalchemy import func, select

from tests.fakes.node_exporter import FakeNodeExporter
from tests.serve_helpers import ServeProcess, clean_env, write_config

INTERVAL = 0.5
LEASE = 2.0


async def until(predicate: Callable[[], Any], timeout: float, what: str, procs: list[ServeProcess]) -> Any:
    """Poll without blocking the loop the fake exporter answers on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    logs = "\n".join(p.output()[-1500:] for p in procs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.mark.slow
async def test_only_the_leader_scrapes_and_a_new_leader_takes_over(board_url: str, tmp_path: Path) -> None:
    exporter = FakeNodeExporter()
    await exporter.start()
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": board_url},
            "kanban.dispatcher": {"heartbeat_seconds": LEASE / 4, "lease_seconds": LEASE},
            "scheduler": {"leader_lease_seconds": LEASE},
            "alerts": {"digest_cron": ""},
            "http": {"listen": ""},
            "gateways.gpu1": {
                "base_url": "http://127.0.0.1:9/v1",
                "probe_interval_seconds": INTERVAL,
                "node_metrics": exporter.urls,
            },
            "profiles.default": {"runner": "noop"},
        },
    )
    config = load_config(config_path)[0]
    open_board(config).db.dispose()  # migrated before either process starts
    db = Database(config.board.url)
    env = clean_env(tmp_path / "home")
    procs = [ServeProcess(config_path, env, tmp_path / f"serve{n}.log") for n in range(2)]

    def readings() -> int:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(node_readings)).scalar_one())

    def leader_pid() -> int | None:
        with db.read() as conn:
            holder = conn.execute(select(leases.c.holder).where(leases.c.name == "leader")).scalar()
        return int(holder.split(":")[1]) if holder else None

    try:
        await until(lambda: readings() >= 4, 60, "the first readings", procs)
        before, scrapes, started = readings(), exporter.scrapes, time.monotonic()
        await asyncio.sleep(4.0)
        rounds = (time.monotonic() - started) / INTERVAL
        made = readings() - before
        # one scraper: a row per round; two would write about twice as many
        assert rounds * 0.5 <= made <= rounds + 2, (made, rounds)
        assert exporter.scrapes - scrapes <= 2 * (rounds + 2)  # two URLs a round
        leader = leader_pid()
        [dead] = [p for p in procs if p.pid == leader]
        dead.kill()
        count = readings()
        # the survivor wins the lease once it expires and scrapes from then on
        await until(lambda: leader_pid() not in (None, leader), 30, "a new leader", procs)
        await until(lambda: readings() >= count + 4, 30, "readings from the new leader", procs)
    finally:
        for p in procs:
            p.terminate()
        db.dispose()
        await exporter.stop()
