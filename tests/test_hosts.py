"""Many hosts, one board (issue 19), piece by piece: the database's clock, the board's
caps, a window's fire times, the stop signal of a run taken back, LISTEN's reconnect.

The multi-process tests (skewed hosts, disagreeing configs, an outage) are in
test_hosts_scale.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, timedelta

import pytest
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.caps import Limits, config_disagreements
from lanewarden.core.claims import ClaimKernel
from lanewarden.core.clock import utcnow
from lanewarden.core.liveness import database_now, measure_skew
from lanewarden.core.schema import runs
from lanewarden.core.wakeup import LISTEN_RETRY_FIRST, LISTEN_RETRY_MAX, PostgresListener
from lanewarden.core.windows import WindowStore
from sqlalchemy import update

from tests.conftest import make_config, pg_url
from tests.tcp_proxy import TcpProxy


def test_database_clock_and_skew(board: Board) -> None:
    with board.db.read() as conn:
        now = database_now(conn)
        skew = measure_skew(conn)
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs((now - utcnow()).total_seconds()) < 5  # the test and the database share this host
    assert abs(skew) < 1


def test_a_run_taken_back_tells_its_owner_to_stop(board: Board) -> None:
    topics: list[str] = []
    board.subscribe(topics.append)
    board.add(NewTask(title="t"), "test")
    owner = ClaimKernel(board, "owner")
    (claim,) = owner.claim(1)
    with board.db.write() as conn:  # the owner was cut off and its lease ran out
        conn.execute(update(runs).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    topics.clear()
    assert ClaimKernel(board, "other").reclaim_expired() == [claim.run_id]
    assert {"stop", "dispatch"} <= set(topics)
    assert owner.stop_requests([claim.run_id]) == {claim.run_id: "reclaimed"}


def test_a_window_fires_once_per_scheduled_time(board: Board) -> None:
    store = WindowStore(board)
    at = utcnow().replace(microsecond=0)
    assert store.claim_fire("tick", at, "a")
    assert not store.claim_fire("tick", at, "b")  # the other leader, same scheduled time
    assert not store.claim_fire("tick", at - timedelta(minutes=1), "b")  # an older time, late
    assert store.claim_fire("tick", at + timedelta(minutes=1), "b")
    assert store.claim_fire("other", at, "b")  # windows are independent


def caps_config(url: str, board_cap: int, gateway_cap: int):
    return make_config(
        url,
        kanban={"dispatcher": {"max_active_tasks": board_cap}, "workers": {"profile": "default"}},
        gateways={"gpu": {"base_url": "http://127.0.0.1:9/v1", "max_concurrency": gateway_cap}},
    )


def test_caps_are_the_boards_whatever_each_config_says(board_url: str) -> None:
    strict, loose = caps_config(board_url, 2, 1), caps_config(board_url, 6, 3)
    first = open_board(strict)
    assert first.seed_caps() == ""  # the first serve seeds the board from its config
    second = Board(first.db, loose)
    differs = second.seed_caps()  # a later one with another config changes nothing
    assert differs == "max_active_tasks 6 (board: 2), gateway gpu 3 (board: 1)"
    limits, _ = second.limits()
    assert (limits.board_cap, limits.gateways["gpu"].cap) == (2, 1)
    assert limits.overrides == {}  # seeded values are not `caps set` overrides
    assert config_disagreements(first.limits()[0]) == ""
    # an admin applies the loose config's board cap: every process now enforces 6
    second.reset_cap("board", None, "cli:admin")
    for b in (first, second):
        with b.db.read() as conn:
            assert Limits.load(conn, b.config).board_cap == 6
    assert first.limits()[0].config_differs == {("board", ""): 2}
    first.set_cap("gateway", "gpu", 4, "cli:admin")
    assert second.limits()[0].overrides == {("gateway", "gpu"): 4}
    first.db.dispose()


@pytest.mark.postgres
async def test_listen_retries_soon_and_often_during_an_outage(
    pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    url = pg_url(pg_schema).replace(":5432/", f":{proxy.port}/")
    topics: list[str] = []
    listener = PostgresListener(url, topics.append)
    task = asyncio.create_task(listener.run())
    caplog.set_level(logging.WARNING, logger="lanewarden.wakeup")
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        proxy.cut()
        await asyncio.sleep(3)  # an outage of several retries
        topics.clear()
        proxy.restore()
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert "dispatch" in topics and "stop" in topics  # the reconnect wakes every loop
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        proxy.cut()
    delays = [float(m) for m in re.findall(r"reconnecting in ([0-9.]+)s", caplog.text)]
    assert len(delays) >= 4, caplog.text
    assert delays[0] == LISTEN_RETRY_FIRST and max(delays) == LISTEN_RETRY_MAX, delays


def test_a_heartbeat_is_on_the_database_clock(board: Board) -> None:
    board.add(NewTask(title="t"), "test")
    kernel = ClaimKernel(board, "d")
    (claim,) = kernel.claim(1)
    kernel.heartbeat([claim.run_id])
    with board.db.read() as conn:
        expires = conn.execute(runs.select().where(runs.c.id == claim.run_id)).one().lease_expires_at
        now = database_now(conn)
    lease = board.config.kanban.dispatcher.lease_seconds
    assert timedelta(seconds=lease - 5) < expires.astimezone(UTC) - now <= timedelta(seconds=lease)
