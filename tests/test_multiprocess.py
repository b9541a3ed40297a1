"""Several `lanewarden serve` processes on one board: caps still hold, crashes lose nothing.

SQLite here (issue: three processes on one file); the PostgreSQL scale-out tests
(four processes, database restarts) live in test_scale_out.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lanewarden.core.board import NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import load_config
from lanewarden.core.leader import current_leader
from lanewarden.core.schema import dispatchers, runs, tasks
from sqlalchemy import select

from tests.fakes.gateway import FakeGateway, Tracker
from tests.serve_helpers import ServeProcess, clean_env, wait_until, write_config

pytestmark = pytest.mark.slow


def board_config(
    tmp_path: Path, url: str, gw1: FakeGateway, gw2: FakeGateway, *, caps=(3, 2, 2), lease: float = 2.0
) -> Path:
    board_cap, profile_cap, gateway_cap = caps
    return write_config(
        tmp_path / "lanewarden.toml",
        {
            "board": {"url": url},
            "kanban.dispatcher": {
                "max_active_tasks": board_cap,
                "heartbeat_seconds": lease / 4,
                "lease_seconds": lease,
                "poll_interval_seconds": 1.0,
                "drain_timeout_seconds": 5,
            },
            "kanban.workers": {"profile": "p1", "max_parallel_per_profile": profile_cap},
            "scheduler": {"leader_lease_seconds": lease},
            "gateways.g1": {
                "base_url": gw1.base_url,
                "max_concurrency": gateway_cap,
                "kind": "vllm",
                "probe_interval_seconds": 1.0,
            },
            "gateways.g2": {
                "base_url": gw2.base_url,
                "max_concurrency": gateway_cap,
                "kind": "vllm",
                "probe_interval_seconds": 1.0,
            },
            "profiles.p1": {"gateway": "g1", "model": "model-p1"},
            "profiles.p2": {"gateway": "g2", "model": "model-p2"},
            "http": {"listen": ""},
        },
    )


def done_count(board) -> int:
    with board.db.read() as conn:
        return sum(1 for r in conn.execute(select(tasks.c.status)) if r.status == "done")


def run_many(
    tmp_path: Path,
    url: str,
    *,
    processes: int,
    tasks_total: int,
    kill: int = 0,
    kill_leader: bool = False,
    disrupt=None,
    caps=(3, 2, 2),
    delay: float = 0.1,
    lease: float = 2.0,
) -> dict:
    """Start ``processes`` serve processes on one board and run ``tasks_total`` tasks through them.

    ``kill``: kill -9 that many processes while they hold running work (the leader among them
    if ``kill_leader``). ``disrupt``: called once, a quarter of the way through (a database restart).
    """
    tracker = Tracker()
    gw1, gw2 = FakeGateway(delay=delay, tracker=tracker), FakeGateway(delay=delay, tracker=tracker)
    config_path = board_config(tmp_path, url, gw1, gw2, caps=caps, lease=lease)
    config, _ = load_config(config_path)
    board = open_board(config)
    keys = {}
    for i in range(tasks_total):
        profile = "p1" if i % 2 == 0 else "p2"
        keys[board.add(NewTask(title=f"[task {i}]", profile=profile), "test").id] = i
    env = clean_env(tmp_path / "home")
    procs = [ServeProcess(config_path, env, tmp_path / f"serve{n}.log") for n in range(processes)]
    killed: list[str] = []
    killed_at = None
    try:
        if kill:

            def victims():
                with board.db.read() as conn:
                    rows = conn.execute(
                        select(dispatchers.c.id, dispatchers.c.pid)
                        .join(runs, runs.c.dispatcher == dispatchers.c.id)
                        .where(runs.c.finished_at.is_(None))
                    ).all()
                leader = current_leader(board.db)
                by_pid = {p.pid: p for p in procs}
                found = {r.id: by_pid[r.pid] for r in rows if r.pid in by_pid}
                if kill_leader:
                    if leader is None or leader.holder not in found:
                        return None
                    found = {leader.holder: found[leader.holder], **found}
                return found if len(found) >= kill and done_count(board) >= tasks_total // 5 else None

            chosen = wait_until(victims, what="processes with running work", procs=procs)
            killed_at = utcnow()
            for dispatcher_id, proc in list(chosen.items())[:kill]:
                proc.kill()
                killed.append(dispatcher_id)
        if disrupt is not None:
            wait_until(lambda: done_count(board) >= tasks_total // 4, what="a quarter done", procs=procs)
            disrupt()
        wait_until(lambda: done_count(board) == tasks_total, timeout=300, what="every task done", procs=procs)
        leader = wait_until(lambda: current_leader(board.db), what="a leader", procs=procs)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                assert p.terminate() == 0, p.output()[-3000:]
        gw1.close()
        gw2.close()
    with board.db.read() as conn:
        all_runs = conn.execute(select(runs)).all()
        all_tasks = conn.execute(select(tasks)).all()
    board.db.dispose()
    return {
        "gw1": gw1,
        "gw2": gw2,
        "tracker": tracker,
        "runs": all_runs,
        "tasks": all_tasks,
        "keys": keys,
        "killed": killed,
        "killed_at": killed_at,
        "procs": procs,
        "leader": leader,
    }


def check_caps_and_once(result: dict, caps=(3, 2, 2)) -> None:
    board_cap, profile_cap, gateway_cap = caps
    gw1, gw2, tracker = result["gw1"], result["gw2"], result["tracker"]
    assert tracker.peak <= board_cap, f"board peak {tracker.peak} > {board_cap}"
    assert gw1.peak <= gateway_cap and gw2.peak <= gateway_cap, (gw1.peak, gw2.peak)
    assert gw1.model_peak["model-p1"] <= profile_cap and gw2.model_peak["model-p2"] <= profile_cap
    assert tracker.peak == board_cap, "the caps were never reached: the test proves nothing"
    succeeded = Counter(r.task_id for r in result["runs"] if r.outcome == "succeeded")
    assert all(t.status == "done" for t in result["tasks"])
    assert set(succeeded) == set(result["keys"]) and set(succeeded.values()) == {1}, "a task completed twice"
    for t in result["tasks"]:
        assert t.attempts == 1, f"#{t.id} used {t.attempts} attempts"


def test_three_processes_on_sqlite_hold_the_caps(tmp_path: Path) -> None:
    result = run_many(tmp_path, f"sqlite:///{tmp_path / 'board.db'}", processes=3, tasks_total=60)
    check_caps_and_once(result)
    served = Counter(r.dispatcher for r in result["runs"])
    assert len(served) >= 2, f"only one process did all the work: {served}"
    counts = result["gw1"].task_counts() + result["gw2"].task_counts()
    assert set(counts.values()) == {1}, "a gateway saw a task twice with no crash"


def test_kill_minus_nine_loses_nothing(tmp_path: Path) -> None:
    result = run_many(
        tmp_path, f"sqlite:///{tmp_path / 'board.db'}", processes=3, tasks_total=40, kill=1, delay=0.4
    )
    check_caps_and_once(result)
    lost = [r for r in result["runs"] if r.dispatcher in result["killed"] and r.outcome == "lost"]
    assert lost, "the killed process had running work that should have been reclaimed"
    for run in lost:
        task = next(t for t in result["tasks"] if t.id == run.task_id)
        assert task.status == "done" and task.attempts == 1
