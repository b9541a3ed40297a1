"""``tune``: the advice rules pinned on synthetic hours, and the verb's one code path."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, open_board
from lanewarden.core.clock import utcnow
from lanewarden.core.config import AlertsConfig
from lanewarden.core.errors import AccessDenied
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.node_monitor import record_reading
from lanewarden.core.nodes import NodeFigures, NodeReading
from lanewarden.core.schema import cap_overrides
from lanewarden.core.status import build_status
from lanewarden.core.tune import GatewayHistory, LimitChange, RunSample, advise
from sqlalchemy import select

from tests.conftest import make_config

NOW = datetime.fromisoformat("2026-12-01T12:00:00+00:00")
ALERTS = AlertsConfig()


def reading(minute: float, *, util: float | None, in_flight: int, cap: int, waiting: int) -> NodeReading:
    figures = NodeFigures(gpu_util=util, vram_used_bytes=1e9, vram_total_bytes=8e9)
    return NodeReading(
        "gpu1",
        NOW - timedelta(minutes=60 - minute),
        util is not None,
        figures,
        in_flight,
        cap,
        cap,
        waiting,
    )


def steady_runs(*, ms_per_token: float, rise: float = 1.0, timeouts_every: int = 0) -> list[RunSample]:
    """One run a minute for the hour, 100 tokens each; the second half ``rise`` times slower."""
    found = []
    for minute in range(60):
        slow = rise if minute >= 30 else 1.0
        outcome = "timed_out" if timeouts_every and minute % timeouts_every == 0 else "succeeded"
        found.append(
            RunSample(NOW - timedelta(minutes=59.5 - minute), outcome, ms_per_token * 100 * slow, 100)
        )
    return found


def history(readings: list[NodeReading], runs: list[RunSample], **kw: object) -> GatewayHistory:
    values: dict[str, object] = {
        "gateway": "gpu1",
        "now": NOW,
        "cap": 2,
        "limit": 2,
        "adaptive": False,
        "has_exporters": True,
    }
    values.update(kw)
    return GatewayHistory(readings=readings, runs=runs, **values)  # type: ignore[arg-type]


def test_under_used_gpu_with_a_full_cap_proposes_one_more() -> None:
    # 40 of the 60 minutes at cap 2 with work waiting, GPU 38% busy, latency flat
    readings = [reading(m, util=38, in_flight=2, cap=2, waiting=14 if m < 40 else 0) for m in range(60)]
    advice = advise(history(readings, steady_runs(ms_per_token=20)), ALERTS)
    assert advice.verdict == "under_used"
    assert advice.proposed_cap == 3
    assert advice.text == (
        "gpu1: GPU 38% busy while up to 14 task(s) waited at cap 2 for 40 min; p95 flat "
        "→ try `caps set gateway gpu1 3`"
    )


def test_rising_latency_at_constant_throughput_is_overloaded() -> None:
    readings = [reading(m, util=97, in_flight=3, cap=3, waiting=2) for m in range(60)]
    advice = advise(history(readings, steady_runs(ms_per_token=20, rise=2.5), cap=3), ALERTS)
    assert advice.verdict == "overloaded"
    assert advice.proposed_cap == 2
    assert "p95 rose 2.5x" in advice.text and "`caps set gateway gpu1 2`" in advice.text


def test_timeouts_are_overloaded_even_with_an_idle_looking_gpu() -> None:
    readings = [reading(m, util=30, in_flight=2, cap=2, waiting=5) for m in range(60)]
    advice = advise(history(readings, steady_runs(ms_per_token=20, timeouts_every=4)), ALERTS)
    assert advice.verdict == "overloaded" and advice.proposed_cap == 1
    assert "15 of 60 requests timed out (25%)" in advice.text


def test_overloaded_at_cap_one_proposes_nothing_lower() -> None:
    advice = advise(history([], steady_runs(ms_per_token=20, rise=3), cap=1, limit=1), ALERTS)
    assert advice.verdict == "overloaded" and advice.proposed_cap is None
    assert "too slow" in advice.text


def test_busy_gpu_and_short_queue_is_fine() -> None:
    # the cap was full only 5 minutes, the GPU well used: nothing to change
    readings = [reading(m, util=75, in_flight=2 if m < 5 else 1, cap=2, waiting=1) for m in range(60)]
    advice = advise(history(readings, steady_runs(ms_per_token=20)), ALERTS)
    assert advice.verdict == "fine" and advice.proposed_cap is None
    assert advice.text == (
        "gpu1: fine: GPU 75% busy on average, up to 1 task(s) waited at cap 2 for 5 min; p95 flat"
    )


def test_full_cap_with_a_busy_gpu_is_fine() -> None:
    readings = [reading(m, util=92, in_flight=2, cap=2, waiting=6) for m in range(60)]
    advice = advise(history(readings, steady_runs(ms_per_token=20)), ALERTS)
    assert advice.verdict == "fine" and advice.proposed_cap is None


def test_without_gpu_readings_a_full_cap_is_not_called_under_used() -> None:
    readings = [reading(m, util=None, in_flight=2, cap=2, waiting=6) for m in range(60)]
    advice = advise(history(readings, steady_runs(ms_per_token=20), has_exporters=False), ALERTS)
    assert advice.verdict == "fine" and advice.proposed_cap is None
    assert "no node_metrics configured" in advice.text


def test_adaptive_explains_the_limit_instead() -> None:
    readings = [reading(m, util=38, in_flight=2, cap=8, waiting=14) for m in range(60)]
    changes = [LimitChange(NOW - timedelta(minutes=17), 3, "adaptive")]
    advice = advise(
        history(readings, steady_runs(ms_per_token=20), adaptive=True, cap=8, limit=3, limit_changes=changes),
        ALERTS,
    )
    assert advice.verdict == "adaptive" and advice.proposed_cap is None
    assert advice.text.startswith("gpu1: adaptive: limit 3 of cap 8, set 11:43 (adaptive)")


# ------------------------------------------------------------------- the verb


@pytest.fixture
def tune_board(board_url: str) -> Board:
    config = make_config(
        board_url,
        gateways={
            "gpu1": {
                "base_url": "http://127.0.0.1:9/v1",
                "max_concurrency": 2,
                "node_metrics": ["http://127.0.0.1:9/metrics"],
            }
        },
        profiles={"default": {"runner": "noop"}, "llm": {"gateway": "gpu1", "model": "m"}},
    )
    board = open_board(config)
    yield board
    board.db.dispose()


def under_used_hour(board: Board) -> None:
    """Readings as the leader would have written them: cap 2 full, 8 waiting, GPU 30%."""
    from lanewarden.core.schema import node_readings
    from sqlalchemy import insert

    now = utcnow()
    rows = [
        {
            "gateway": "gpu1",
            "at": now - timedelta(minutes=50 - m),
            "known": True,
            "gpu_util": 30.0,
            "in_flight": 2,
            "current_limit": 2,
            "cap": 2,
            "waiting": 8,
        }
        for m in range(50)
    ]
    with board.db.write() as conn:
        conn.execute(insert(node_readings), rows)


def test_tune_apply_needs_an_admin_and_changes_only_then(tune_board: Board) -> None:
    under_used_hour(tune_board)
    executor = Executor(tune_board)
    operator = Actor("slack:U1", "operator", "slack:C1")
    shown = executor.execute(parse("tune"), operator)
    assert [a.proposed_cap for a in shown.advice] == [3]
    with pytest.raises(AccessDenied, match="needs the admin role"):
        executor.execute(parse("tune --apply"), operator)
    with tune_board.db.read() as conn:
        assert conn.execute(select(cap_overrides)).all() == []
    admin = Actor("slack:U2", "admin", "slack:C1")
    applied = executor.execute(parse("tune gpu1 --apply"), admin)
    assert applied.applied == [("gpu1", 3)]
    with tune_board.db.read() as conn:
        assert conn.execute(select(cap_overrides.c.name, cap_overrides.c.value)).all() == [("gpu1", 3)]
    # the hour at cap 2 is no evidence about 3: no second step until cap 3 has been observed
    [after] = executor.execute(parse("tune"), operator).advice
    assert after.verdict == "fine" and after.proposed_cap is None
    assert "cap 3 was not full with work waiting" in after.text
    shown = build_status(tune_board.db, tune_board.config).advice
    assert [a.text for a in shown] == [after.text]  # status forgot the advice it had cached


def test_a_stored_round_keeps_the_board_view(tune_board: Board) -> None:
    stored = record_reading(tune_board.db, tune_board.config, "gpu1", NodeFigures(errors=("x: refused",)))
    assert not stored.known and stored.cap == 2 and stored.waiting == 0
