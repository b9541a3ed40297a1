"""Alert rules: they fire on real conditions, with hysteresis and a cooldown, and resolve."""

from __future__ import annotations

from datetime import timedelta

import pytest
from lanewarden.core.board import Board, NewTask, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.gateway_state import set_gateway_state
from lanewarden.core.schema import events, outbox, runs, tasks
from lanewarden.scheduler.alerts import AlertEngine
from sqlalchemy import insert, select, update

from tests.conftest import make_config


@pytest.fixture
def alert_board(board_url: str) -> Board:
    config = make_config(
        board_url,
        alerts={
            "cooldown_seconds": 600,
            "min_samples": 4,
            "error_rate": 0.5,
            "oldest_ready_seconds": 60,
            "server_queue": 3,
        },
        slack={"alert_channel": "C0ALERTS1"},
    )
    board = open_board(config)
    yield board
    board.db.dispose()


def transitions(engine: AlertEngine, now, key_prefix: str) -> list[str]:
    return [change for key, change in engine.evaluate(now) if key.startswith(key_prefix)]


def set_health(board: Board, healthy: bool) -> None:
    with board.db.write() as conn:
        set_gateway_state(conn, "gpu", utcnow(), healthy=healthy, last_error=None if healthy else "refused")


def alert_events(board: Board) -> list:
    with board.db.read() as conn:
        return conn.execute(
            select(events).where(events.c.kind.in_(("alert", "alert_resolved"))).order_by(events.c.id)
        ).all()


def test_gateway_down_fires_once_resolves_and_cools_down(alert_board: Board) -> None:
    engine = AlertEngine(alert_board, alert_board.config)
    t = utcnow()
    set_health(alert_board, False)
    assert transitions(engine, t, "gateway_down") == []  # one bad sample is not an alert
    assert transitions(engine, t + timedelta(seconds=30), "gateway_down") == ["fired"]
    assert transitions(engine, t + timedelta(seconds=60), "gateway_down") == []  # no repeats while firing
    set_health(alert_board, True)
    assert transitions(engine, t + timedelta(seconds=90), "gateway_down") == []
    assert transitions(engine, t + timedelta(seconds=120), "gateway_down") == ["resolved"]
    # flapping right after: within the cooldown nothing is announced
    set_health(alert_board, False)
    for step in range(3, 8):
        assert transitions(engine, t + timedelta(seconds=120 + step * 30), "gateway_down") == []
    # after the cooldown, a new outage is news again
    assert transitions(engine, t + timedelta(seconds=120 + 601), "gateway_down") == ["fired"]
    kinds = [e.kind for e in alert_events(alert_board) if e.data["key"] == "gateway_down:gpu"]
    assert kinds == ["alert", "alert_resolved", "alert"]
    with alert_board.db.read() as conn:
        rows = conn.execute(select(outbox).where(outbox.c.kind == "alert")).all()
    assert [(r.adapter, r.channel) for r in rows] == [("slack", "C0ALERTS1")] * 3
    assert "gateway gpu is down (refused)" in rows[0].payload["text"]
    assert "resolved after" in rows[1].payload["text"]


def add_runs(board: Board, outcomes: list[str], *, ago: float = 30, latency_ms: float = 1000) -> None:
    task = board.add(NewTask(title="t"), "test")
    now = utcnow() - timedelta(seconds=ago)
    with board.db.write() as conn:
        conn.execute(
            insert(runs),
            [
                {
                    "task_id": task.id,
                    "attempt": i + 1,
                    "dispatcher": "d",
                    "profile": "researcher",
                    "gateway": "gpu",
                    "claimed_at": now,
                    "lease_expires_at": now,
                    "finished_at": now,
                    "outcome": outcome,
                    "latency_ms": latency_ms,
                }
                for i, outcome in enumerate(outcomes)
            ],
        )


def test_error_rate_with_hysteresis(alert_board: Board) -> None:
    engine = AlertEngine(alert_board, alert_board.config)
    t = utcnow()
    add_runs(alert_board, ["failed"] * 3)
    assert transitions(engine, t, "error_rate") == []
    assert transitions(engine, t, "error_rate") == []  # 3 samples < min_samples: no verdict
    add_runs(alert_board, ["failed"] * 3 + ["succeeded"] * 2)  # 6 of 8 failed: 75% > 50%
    assert transitions(engine, t, "error_rate") == []
    assert transitions(engine, t, "error_rate") == ["fired"]
    add_runs(alert_board, ["succeeded"] * 4)  # 6 of 12: 50%, not above, but not below 40% either
    for _ in range(3):
        assert transitions(engine, t, "error_rate") == []  # inside the hysteresis band: still firing
    add_runs(alert_board, ["succeeded"] * 8)  # 6 of 20: 30% < 40%
    assert transitions(engine, t, "error_rate") == []
    assert transitions(engine, t, "error_rate") == ["resolved"]


def test_server_queue_and_stuck_task_and_oldest_ready(alert_board: Board) -> None:
    engine = AlertEngine(alert_board, alert_board.config)
    t = utcnow()
    with alert_board.db.write() as conn:
        set_gateway_state(conn, "gpu", t, healthy=True, signals={"running": 2, "waiting": 5})
    task = alert_board.add(NewTask(title="stale"), "test")
    with alert_board.db.write() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task.id).values(updated_at=t - timedelta(minutes=5)))
    engine.evaluate(t)
    fired = dict(engine.evaluate(t + timedelta(seconds=30)))
    assert fired.get("server_queue:gpu") == "fired"
    assert fired.get("oldest_ready") == "fired"
    messages = " ".join(e.message for e in alert_events(alert_board))
    assert (
        "queueing 5 request(s) server-side" in messages and "oldest dispatchable task has waited" in messages
    )


def test_a_new_leader_does_not_repeat_a_firing_alert(alert_board: Board) -> None:
    t = utcnow()
    set_health(alert_board, False)
    first = AlertEngine(alert_board, alert_board.config)
    first.evaluate(t)
    assert dict(first.evaluate(t + timedelta(seconds=30))).get("gateway_down:gpu") == "fired"
    successor = AlertEngine(alert_board, alert_board.config)  # leadership moved
    for step in range(2, 5):
        assert "gateway_down:gpu" not in dict(successor.evaluate(t + timedelta(seconds=30 * step)))
    set_health(alert_board, True)
    successor.evaluate(t + timedelta(seconds=200))
    assert dict(successor.evaluate(t + timedelta(seconds=230))).get("gateway_down:gpu") == "resolved"


def test_task_active_past_max_runtime(alert_board: Board) -> None:
    from lanewarden.core.claims import ClaimKernel

    task = alert_board.add(NewTask(title="long job"), "test")
    (claim,) = ClaimKernel(alert_board, "d").claim(1)
    engine = AlertEngine(alert_board, alert_board.config)
    t = utcnow()
    assert f"stuck:{task.id}" not in dict(engine.evaluate(t))
    with alert_board.db.write() as conn:
        conn.execute(update(runs).where(runs.c.id == claim.run_id).values(claimed_at=t - timedelta(hours=2)))
    engine.evaluate(t)
    assert dict(engine.evaluate(t + timedelta(seconds=30))).get(f"stuck:{task.id}") == "fired"
    assert "past its max runtime of 1h" in alert_events(alert_board)[-1].message
