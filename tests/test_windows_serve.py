"""Windows in real `serve` processes: only the leader fires, failover keeps the schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.config import load_config
from lanewarden.core.leader import current_leader
from lanewarden.core.schema import events, tasks
from lanewarden.core.windows import WindowStore
from sqlalchemy import select

from tests.conftest import pg_url
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'board.db'}"
    return pg_url(request.getfixturevalue("pg_schema"))


def window_runs(board) -> list:
    with board.db.read() as conn:
        return conn.execute(select(events).where(events.c.kind == "window_ran").order_by(events.c.id)).all()


def test_two_processes_never_both_fire_and_failover_continues(tmp_path: Path, url: str) -> None:
    config_path = write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": url},
            "kanban.dispatcher": {"enabled": False, "heartbeat_seconds": 0.5, "lease_seconds": 2.0},
            "kanban.workers": {"profile": "noop"},
            "profiles.noop": {"runner": "noop"},
            "scheduler": {"leader_lease_seconds": 2.0},
            "alerts": {"digest_cron": ""},
            "http": {"listen": ""},
        },
    )
    config, _ = load_config(config_path)
    board = open_board(config)
    for i in range(40):
        board.add(NewTask(title=f"t{i}", column="backlog"), "test")
    WindowStore(board).add(
        "each-second", "* * * * * *", "UTC", "promote-batch --from backlog --to ready --max 1", "test"
    )
    env = clean_env(tmp_path / "home")
    procs = [ServeProcess(config_path, env, tmp_path / f"serve{n}.log") for n in range(2)]
    try:
        wait_until(lambda: len(window_runs(board)) >= 4, what="four window runs", procs=procs)
        first = current_leader(board.db)
        leader_proc = next(p for p in procs if first.holder.split(":")[1] == str(p.pid))
        leader_proc.kill()
        before = len(window_runs(board))
        wait_until(lambda: len(window_runs(board)) >= before + 4, what="runs after failover", procs=procs)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                assert p.terminate() == 0, p.output()[-3000:]
    runs = window_runs(board)
    scheduled = [r.data["scheduled"] for r in runs]
    assert len(scheduled) == len(set(scheduled)), "a scheduled run fired twice"
    holders = [r.data["holder"] for r in runs]
    switch = holders.index(next(h for h in holders if h != holders[0]))
    assert set(holders[:switch]) == {first.holder} and first.holder not in holders[switch:]
    with board.db.read() as conn:
        ready = conn.execute(select(tasks.c.id).where(tasks.c.status == "ready")).all()
    promoted = sum(len(r.data["result"]["tasks"]) for r in runs)
    assert promoted == len(ready) == len(runs)  # one per run, never more
    board.db.dispose()
