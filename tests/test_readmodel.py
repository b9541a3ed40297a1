"""The read model pins each figure once, and every report reads the same value."""

from __future__ import annotations

from datetime import datetime, timedelta

from lanewarden.bot.http.metrics import load_snapshot
from lanewarden.bot.tools.doctor import board_state
from lanewarden.core.board import Board, NewTask
from lanewarden.core.clock import utcnow
from lanewarden.core.readmodel import (
    RunSample,
    concurrency,
    in_flight_steps,
    limit_history,
    live_dispatchers,
    live_window,
    oldest_dispatchable,
    outbox_depth,
    run_stats,
)
from lanewarden.core.schema import dispatchers, gateway_limit_history, outbox, tasks
from lanewarden.core.status import build_status
from lanewarden.scheduler.alerts import AlertEngine
from sqlalchemy import insert, update

from tests.conftest import ADMIN


def _age(board: Board, task_id: int, seconds: float) -> None:
    with board.db.write() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def test_oldest_dispatchable_skips_tasks_that_cannot_run_and_every_report_agrees(board: Board) -> None:
    parent = board.add(NewTask(title="parent"), ADMIN.id)
    blocked_child = board.add(NewTask(title="child of a failed parent", column="backlog"), ADMIN.id)
    board.link(parent.id, blocked_child.id, ADMIN.id)
    board.promote(blocked_child.id, "ready", ADMIN.id)
    later = board.add(NewTask(title="not yet", not_before=utcnow() + timedelta(hours=1)), ADMIN.id)
    runnable = board.add(NewTask(title="can run"), ADMIN.id)
    with board.db.write() as conn:
        conn.execute(update(tasks).where(tasks.c.id == parent.id).values(status="failed"))
    _age(board, blocked_child.id, 7200)  # the oldest ready task cannot run: its parent failed
    _age(board, later.id, 7000)  # nor can this one: not_before is in the future
    _age(board, runnable.id, 600)

    now = utcnow()
    with board.db.read() as conn:
        oldest = oldest_dispatchable(conn, now)
    assert oldest is not None and oldest.task_id == runnable.id
    waited = oldest.waited(now).total_seconds()
    assert 590 < waited < 700

    status = build_status(board.db, board.config)
    assert status.oldest_ready_seconds is not None and 590 < status.oldest_ready_seconds < 700
    snapshot = load_snapshot(board)
    assert snapshot.oldest_ready is not None
    assert 590 < (snapshot.at - snapshot.oldest_ready).total_seconds() < 700
    state = board_state(board.db, board.config)
    assert state.oldest is not None and state.oldest.task_id == runnable.id
    finding = next(f for f in AlertEngine(board, board.config).findings(now) if f.key == "oldest_ready")
    assert finding.message.startswith("the oldest dispatchable task has waited 10")


def test_a_live_process_is_one_the_claim_kernel_would_not_take_runs_from(board: Board) -> None:
    now = utcnow()
    window = live_window(board.config)
    rows = [
        ("fresh", now - timedelta(seconds=1), "running"),
        ("inside", now - window + timedelta(seconds=1), "draining"),
        ("stale", now - window - timedelta(seconds=1), "running"),
        ("stopped", now, "stopped"),
    ]
    with board.db.write() as conn:
        for ident, beat, state in rows:
            conn.execute(
                insert(dispatchers).values(
                    id=ident,
                    host="h",
                    pid=1,
                    started_at=now - timedelta(hours=1),
                    heartbeat_at=beat,
                    state=state,
                )
            )
    with board.db.read() as conn:
        live = {r.id for r in live_dispatchers(conn, board.config, now)}
    assert live == {"fresh", "inside"}
    assert {p["id"] for p in build_status(board.db, board.config).processes} == {"fresh", "inside"}
    assert load_snapshot(board).live_processes == 2
    assert {p.id for p in board_state(board.db, board.config).live} == {"fresh", "inside"}


def test_run_stats_count_verdicts_errors_and_timeouts_once() -> None:
    t = utcnow()
    samples = [
        RunSample("succeeded", 100.0, 10.0, t),
        RunSample("succeeded", 300.0, 30.0, t),
        RunSample("failed", None, None, t),
        RunSample("backpressure", None, None, t),
        RunSample("timed_out", None, None, t),
        RunSample("cancelled", None, None, t),  # a person stopped it: no verdict on the gateway
        RunSample("lost", None, None, t),  # our crash, not the gateway's
    ]
    stats = run_stats(samples)
    assert stats.requests == 5
    assert stats.errors == 2 and stats.timeouts == 1
    assert stats.error_rate == 2 / 5 and stats.timeout_rate == 1 / 5
    assert stats.latency_p50_ms == 100.0 and stats.latency_p95_ms == 300.0
    assert stats.ttft_p50_ms == 10.0
    assert run_stats([]).error_rate is None


def test_concurrency_rebuilds_the_peak_and_time_at_each_level() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=utcnow().tzinfo)
    minute = timedelta(minutes=1)
    intervals = [
        (t0, t0 + 10 * minute),  # 0-10
        (t0 + 5 * minute, t0 + 10 * minute),  # 5-10: two at once for 5 minutes
        (t0 + 10 * minute, t0 + 12 * minute),  # starts when the others end: a handover, not three
        (t0 - 90 * minute, t0 - 70 * minute),  # before the window
        (t0 + 50 * minute, None),  # still open: counts until now
    ]
    since, now = t0 - 60 * minute, t0 + 60 * minute
    curve = concurrency(intervals, since=since, now=now)
    assert curve.peak == 2
    assert curve.seconds_at_or_above[2] == 5 * 60
    assert curve.seconds_at_or_above[1] == (12 + 10) * 60
    steps = in_flight_steps(intervals, since, now)
    assert max(level for _, level in steps) == 2
    assert (t0 + 10 * minute, 1) in steps  # the handover instant: one left, one started


def test_limit_history_keeps_the_limit_in_force_when_the_window_opens(board: Board) -> None:
    now = utcnow()
    with board.db.write() as conn:
        for minutes_ago, limit in ((300, 1), (120, 3), (30, 4), (5, 2)):
            conn.execute(
                insert(gateway_limit_history).values(
                    gateway="gpu",
                    at=now - timedelta(minutes=minutes_ago),
                    current_limit=limit,
                    in_flight=0,
                    reason="adaptive",
                )
            )
    with board.db.read() as conn:
        history = limit_history(conn, now - timedelta(hours=1))
    assert [h.current_limit for h in history["gpu"]] == [3, 4, 2]


def test_outbox_depth_splits_undelivered_from_dead(board: Board) -> None:
    now = utcnow()
    with board.db.write() as conn:
        for adapter, state, minutes_ago in (
            ("slack", "pending", 20),
            ("slack", "sending", 1),
            ("slack", "dead", 50),
            ("discord", "delivered", 90),
            ("discord", "dead", 3),
        ):
            conn.execute(
                insert(outbox).values(
                    adapter=adapter,
                    channel="C1",
                    kind="alert",
                    payload={},
                    created_at=now - timedelta(minutes=minutes_ago),
                    state=state,
                    next_attempt_at=now,
                )
            )
    with board.db.read() as conn:
        depth = outbox_depth(conn)
    assert depth.undelivered == {"slack": 2}
    assert depth.dead == {"slack": 1, "discord": 1}
    assert depth.oldest_undelivered is not None
    assert 19 * 60 < (now - depth.oldest_undelivered).total_seconds() < 21 * 60
