"""Windows: cron meaning, DST, misfire/coalesce policy, persistence, the leader-only scheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from lanewarden.core.access import Actor
from lanewarden.core.board import Board, NewTask
from lanewarden.core.cron import parse_cron
from lanewarden.core.errors import Conflict, UsageError
from lanewarden.core.executor import Executor
from lanewarden.core.grammar import parse
from lanewarden.core.schema import events, tasks
from lanewarden.core.windows import WindowStore
from lanewarden.scheduler.triggers import CronWindowTrigger
from lanewarden.scheduler.windows import JOBS_TABLE, WindowScheduler
from sqlalchemy import select

from tests.dispatch_helpers import wait_for
from tests.helpers import snapshot

PARIS = ZoneInfo("Europe/Paris")
ADMIN = Actor(id="cli:admin", role="admin")


def fires(expression: str, zone: str, start: datetime, count: int) -> list[datetime]:
    trigger = CronWindowTrigger(expression, zone)
    found, previous, now = [], None, start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)
        found.append(nxt)
        previous = now = nxt
    return found


def test_weekday_zero_and_seven_are_sunday() -> None:
    start = datetime(2026, 11, 27, tzinfo=UTC)  # a Friday
    assert [d.strftime("%a %d") for d in fires("0 9 * * 0", "UTC", start, 2)] == ["Sun 29", "Sun 06"]
    assert fires("0 9 * * 7", "UTC", start, 1) == fires("0 9 * * sun", "UTC", start, 1)
    assert [d.strftime("%a") for d in fires("0 9 * * 1-5", "UTC", start, 3)] == ["Fri", "Mon", "Tue"]


def test_day_of_month_or_day_of_week_like_cron() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    days = [d.strftime("%d %a") for d in fires("0 12 1,15 * 1", "UTC", start, 5)]
    assert days == ["01 Sun", "02 Mon", "09 Mon", "15 Sun", "16 Mon"]


def test_skipped_spring_hour_runs_once_an_hour_late() -> None:
    # 2026-03-29 02:00 -> 03:00 in Paris: 02:30 does not exist that day
    got = fires("30 2 * * *", "Europe/Paris", datetime(2026, 3, 28, 12, tzinfo=PARIS), 3)
    assert [d.astimezone(UTC).isoformat() for d in got] == [
        "2026-03-29T01:30:00+00:00",  # 03:30 CEST: once, not skipped, not twice
        "2026-03-30T00:30:00+00:00",
        "2026-03-31T00:30:00+00:00",
    ]


def test_repeated_autumn_hour_runs_once() -> None:
    # 2026-10-25 03:00 -> 02:00 in Paris: 02:00-02:59 happens twice
    got = fires("*/30 2 * * *", "Europe/Paris", datetime(2026, 10, 25, 1, 50, tzinfo=PARIS), 4)
    assert [d.isoformat() for d in got] == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:00:00+01:00",  # the second pass through 02:xx is not served again
        "2026-10-26T02:30:00+01:00",
    ]


def test_seconds_field_and_macros() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert [d.second for d in fires("*/20 * * * * *", "UTC", start, 4)] == [0, 20, 40, 0]
    assert parse_cron("@daily").expression == "0 0 * * *"


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("0 25 * * *", "UTC", "hour value 25 is outside 0-23"),
        ("*/15 * * *", "UTC", "has 4 fields"),
        ("0 9 * * funday", "UTC", "not a number or name"),
        ("0 9 * * *", "Europe/Parsi", "unknown timezone 'Europe/Parsi'"),
    ],
)
def test_bad_windows_are_refused_and_change_nothing(board: Board, cron: str, zone: str, message: str) -> None:
    before = snapshot(board)
    command = parse(
        ["windows", "add", "night", "--cron", cron, "--timezone", zone, "--command", "promote-batch --max 2"]
    )
    with pytest.raises(UsageError, match=message):
        Executor(board).execute(command, ADMIN)
    assert snapshot(board) == before


def test_window_commands_are_the_shared_grammar(board: Board) -> None:
    store = WindowStore(board)
    store.add(
        "night", "0 22 * * *", "UTC", "hermes kanban promote-batch --from ready --to active --max 2", "t"
    )
    with pytest.raises(UsageError, match="a window runs promote-batch, promote, pause, resume, digest"):
        store.add("oops", "0 22 * * *", "UTC", "cancel 4", "t")
    with pytest.raises(UsageError, match="unknown command"):
        store.add("typo", "0 22 * * *", "UTC", "promte-batch --max 2", "t")
    with pytest.raises(Conflict, match="exists"):
        store.add("night", "0 23 * * *", "UTC", "digest", "t")
    assert [w.name for w in store.list()] == ["night"]


def test_config_windows_sync_and_cannot_be_removed_from_chat(board: Board) -> None:
    from lanewarden.core.config import JobConfig

    store = WindowStore(board)
    store.sync_config(
        [
            JobConfig(
                name="n1",
                cron="*/15 * * * *",
                timezone="UTC",
                command="lanewarden promote-batch --from ready --to active --max 2",
            )
        ]
    )
    assert store.get("n1").source == "config"
    with pytest.raises(Conflict, match=r"comes from \[\[scheduler.jobs\]\]"):
        store.remove("n1", "t")
    store.sync_config([])
    assert store.list() == []


def _window_events(board: Board, kind: str = "window_ran") -> list:
    with board.db.read() as conn:
        return conn.execute(select(events).where(events.c.kind == kind).order_by(events.c.id)).all()


def _statuses(board: Board) -> list[str]:
    with board.db.read() as conn:
        return [r.status for r in conn.execute(select(tasks.c.status).order_by(tasks.c.id))]


async def test_window_fires_and_promotes_at_most_max(board: Board) -> None:
    for i in range(5):
        board.add(NewTask(title=f"t{i}", column="backlog"), "test")
    WindowStore(board).add(
        "every-second", "* * * * * *", "UTC", "promote-batch --from backlog --to ready --max 2", "test"
    )
    scheduler = WindowScheduler(board, misfire_grace_seconds=30, is_leader=lambda: True, holder="me")
    await scheduler.start()
    try:
        await wait_for(lambda: _statuses(board).count("ready") == 5, what="all promoted by the window")
        await wait_for(lambda: len(_window_events(board)) >= 3, what="three window runs recorded")
    finally:
        await scheduler.stop()
    runs = _window_events(board)
    promoted_per_run = [len(e.data["result"]["tasks"]) for e in runs]
    assert all(n <= 2 for n in promoted_per_run) and sum(promoted_per_run) == 5
    assert len({e.data["scheduled"] for e in runs}) == len(runs)  # each scheduled run once


async def test_a_non_leader_never_fires(board: Board) -> None:
    board.add(NewTask(title="t", column="backlog"), "test")
    WindowStore(board).add(
        "w", "* * * * * *", "UTC", "promote-batch --from backlog --to ready --max 1", "test"
    )
    scheduler = WindowScheduler(board, misfire_grace_seconds=30, is_leader=lambda: False)
    await scheduler.start()
    try:
        await asyncio.sleep(1.5)
    finally:
        await scheduler.stop()
    assert _statuses(board) == ["backlog"]


def _set_next_run(board: Board, job_id: str, when: datetime) -> None:
    store = SQLAlchemyJobStore(engine=board.db.engine, tablename=JOBS_TABLE)
    store.start(None, "default")  # type: ignore[arg-type]
    job = store.lookup_job(job_id)
    job.next_run_time = when  # no scheduler attached: set it directly, the store pickles it
    store.update_job(job)


async def _restart(board: Board, grace: int) -> WindowScheduler:
    scheduler = WindowScheduler(board, misfire_grace_seconds=grace, is_leader=lambda: True)
    await scheduler.start()
    return scheduler


async def test_jobs_survive_restart_and_missed_runs_coalesce(board: Board) -> None:
    for i in range(4):
        board.add(NewTask(title=f"t{i}", column="backlog"), "test")
    WindowStore(board).add(
        "yearly", "0 0 1 1 *", "UTC", "promote-batch --from backlog --to ready --max 1", "t"
    )
    first = await _restart(board, grace=300)
    next_run = first.next_runs()["yearly"]
    await first.stop()
    # while no scheduler ran, the window's time came and went (several times, say)
    _set_next_run(board, "yearly", datetime.now(UTC) - timedelta(seconds=90))
    second = await _restart(board, grace=300)
    try:
        await wait_for(lambda: len(_window_events(board)) == 1, what="the missed run, once")
        await asyncio.sleep(0.5)
        assert len(_window_events(board)) == 1  # coalesced: one run, not one per missed time
        assert second.next_runs()["yearly"] == next_run  # back on its normal schedule
    finally:
        await second.stop()
    assert _statuses(board).count("ready") == 1


async def test_runs_later_than_the_grace_time_are_skipped(board: Board) -> None:
    board.add(NewTask(title="t", column="backlog"), "test")
    WindowStore(board).add(
        "yearly", "0 0 1 1 *", "UTC", "promote-batch --from backlog --to ready --max 1", "t"
    )
    first = await _restart(board, grace=60)
    await first.stop()
    _set_next_run(board, "yearly", datetime.now(UTC) - timedelta(seconds=600))
    missed: list[str] = []
    second = WindowScheduler(
        board,
        misfire_grace_seconds=60,
        is_leader=lambda: True,
        on_run=lambda name, outcome: missed.append(f"{name}:{outcome}"),
    )
    await second.start()
    try:
        await wait_for(lambda: missed, what="the misfire reported")
    finally:
        await second.stop()
    assert missed == ["yearly:missed"]
    assert _statuses(board) == ["backlog"]
