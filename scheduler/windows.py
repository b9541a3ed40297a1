"""Scheduled windows on APScheduler 3.11, run only by the leader-lease holder.

The ``windows`` table (core/windows.py) is the source of truth; the leader mirrors it
into an AsyncIOScheduler whose jobs live in the board database (SQLAlchemyJobStore,
table ``apscheduler_jobs``), so a window's next run time survives restarts and
failovers. APScheduler must never run twice on one job store: the scheduler is started
when this process gains the lease and shut down the moment it loses it, and every job
checks the lease again before it acts.

Misfire and coalesce policy (also in the README): a window whose time passed while no
leader was running (restart, failover) still runs if it is less than
``scheduler.misfire_grace_seconds`` late (default 300 s); several missed runs collapse
into one (coalesce); a run later than the grace time is skipped and counted as a
misfire. At most one instance of a window runs at a time.

Clocks (issue 19): leaders on different hosts must agree on when a window is due. The
scheduler runs on the database's clock (this host's clock corrected by the skew the
dispatcher measures at each heartbeat, see ``use_database_clock``), and every firing
first records its scheduled time in ``window_fires`` (on the database's clock): a time
that already fired is skipped, so a leader change between skewed hosts never fires a
window twice, and a firing that is early by the database's clock waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import apscheduler.executors.base
import apscheduler.schedulers.base
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from lanewarden.core.access import Actor
from lanewarden.core.board import Board
from lanewarden.core.errors import LanewardenError
from lanewarden.core.executor import Executor
from lanewarden.core.results import BatchPromoted, DigestShown, Done, Result, TaskChanged
from lanewarden.core.windows import Window, WindowStore, window_command
from lanewarden.scheduler.triggers import CronWindowTrigger

log = logging.getLogger("lanewarden.scheduler")
RECONCILE_EVERY = 0.2  # seconds: a window change is scheduled well within a second
JOBS_TABLE = "apscheduler_jobs"
# a timer may wake a little before its time, and the skew is measured to a round trip
EARLY_TOLERANCE = timedelta(seconds=1)

SkewSource = Callable[[], "float | None"]
_skew: SkewSource = lambda: None  # noqa: E731


class _DatabaseTime(datetime):
    """APScheduler's ``datetime``: ``now()`` is the database's time as this host estimates it."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - timedelta(seconds=_skew() or 0.0)


def use_database_clock(skew: SkewSource) -> None:
    """Make APScheduler (one per process) read the database's clock: its due times live in
    the shared job store and must mean the same instant to every leader."""
    global _skew
    _skew = skew
    apscheduler.schedulers.base.datetime = _DatabaseTime  # type: ignore[misc]
    apscheduler.executors.base.datetime = _DatabaseTime  # type: ignore[misc]


@dataclass
class WindowRuntime:
    """What a firing job needs; set while this process leads (jobs are stored by reference)."""

    board: Board
    executor: Executor
    is_leader: Callable[[], bool]
    store: WindowStore
    holder: str


_runtime: WindowRuntime | None = None


async def run_window(name: str, command: str) -> dict[str, Any]:
    """The job APScheduler calls (by reference ``scheduler.windows:run_window``)."""
    runtime = _runtime
    if runtime is None or not runtime.is_leader():
        log.warning("window %s fired on a process that does not hold the leader lease: skipped", name)
        return {"summary": "skipped: not the leader", "ok": False, "skipped": True}
    fire_time = _scheduled_for.get()
    if fire_time is None:  # called outside WindowExecutor (a test calling the job itself)
        fire_time = await asyncio.to_thread(runtime.store.database_now)
    decided_at = await asyncio.to_thread(runtime.store.database_now)
    early = (fire_time - decided_at).total_seconds()
    if early > EARLY_TOLERANCE.total_seconds():
        # this host's skew changed since the last heartbeat measured it: wait for the real time
        log.info("window %s fired %.1fs early by the database's clock: waiting", name, early)
        await asyncio.sleep(early)
        if not runtime.is_leader():
            return {"summary": "skipped: no longer the leader", "ok": False, "skipped": True}
        decided_at = await asyncio.to_thread(runtime.store.database_now)
    if not await asyncio.to_thread(runtime.store.claim_fire, name, fire_time, runtime.holder):
        log.info("window %s already fired for %s: skipped", name, fire_time.isoformat())
        return {
            "summary": f"skipped: already fired for {fire_time.isoformat()}",
            "ok": False,
            "skipped": True,
        }
    outcome = await asyncio.to_thread(_run_window_sync, runtime, name, command)
    return {**outcome, "fire_time": fire_time.isoformat(), "decided_at": decided_at.isoformat()}


_scheduled_for: ContextVar[datetime | None] = ContextVar("scheduled_for", default=None)


class WindowExecutor(AsyncIOExecutor):
    """Hands each job the time it was scheduled for (APScheduler passes only its args):
    the task the executor creates copies the context set here."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> Any:
        token = _scheduled_for.set(run_times[-1])
        try:
            return super()._do_submit_job(job, run_times)
        finally:
            _scheduled_for.reset(token)


def _run_window_sync(runtime: WindowRuntime, name: str, command_text: str) -> dict[str, Any]:
    actor = Actor(id=f"scheduler:{name}", role="admin")
    try:
        result = runtime.executor.execute(window_command(command_text), actor, source_text=command_text)
    except LanewardenError as exc:
        log.warning("window %s failed: %s", name, exc)
        return {"summary": f"failed: {exc}", "ok": False}
    summary = summarize(result)
    log.info("window %s ran `%s`: %s", name, command_text, summary)
    return {"summary": summary, "ok": True, "result": result.to_json()}


def summarize(result: Result) -> str:
    """One line about what a window did (scheduler/ does not import bot/'s renderers)."""
    if isinstance(result, BatchPromoted):
        if not result.tasks:
            return f"nothing to promote from {result.from_column}"
        verb = "released" if result.to_column == "active" else f"promoted to {result.to_column}"
        return f"{verb} " + ", ".join(t.ref for t in result.tasks)
    if isinstance(result, TaskChanged | Done):
        return result.message
    if isinstance(result, DigestShown):
        return "digest posted"
    return result.verb


class BoardJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store on the board's own engine, which it must not dispose."""

    def shutdown(self) -> None:
        return None


class WindowScheduler:
    def __init__(
        self,
        board: Board,
        *,
        misfire_grace_seconds: int,
        is_leader: Callable[[], bool],
        on_run: Callable[[str, str], None] | None = None,
        builtin: list[Window] | None = None,
        holder: str = "",
        executor: Executor | None = None,
        clock_skew: SkewSource | None = None,
    ) -> None:
        self.board = board
        # what runs the windows' commands (serve gives one that can draw the digest's chart)
        self.executor = executor or Executor(board)
        self.holder = holder
        # windows that come with the product rather than the table (the periodic digest)
        self.builtin = builtin or []
        self.misfire_grace_seconds = misfire_grace_seconds
        self.is_leader = is_leader
        self.on_run = on_run
        self.store = WindowStore(board)
        self.clock_skew = clock_skew or (lambda: None)
        self._scheduler: AsyncIOScheduler | None = None
        self._reconcile_pending = False
        self._background: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    async def start(self) -> None:
        global _runtime
        self._loop = asyncio.get_running_loop()
        use_database_clock(self.clock_skew)
        _runtime = WindowRuntime(self.board, self.executor, self.is_leader, self.store, self.holder)
        scheduler = AsyncIOScheduler(
            jobstores={"default": BoardJobStore(engine=self.board.db.engine, tablename=JOBS_TABLE)},
            executors={"default": WindowExecutor()},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.misfire_grace_seconds,
            },
            timezone="UTC",
        )
        scheduler.add_listener(self._on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        scheduler.start()
        self._scheduler = scheduler
        await self.reconcile()
        log.info("scheduler started with %d window(s)", len(scheduler.get_jobs()))

    async def stop(self) -> None:
        global _runtime
        self._loop = None
        for task in list(self._background):
            task.cancel()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            await asyncio.sleep(0)  # AsyncIOScheduler defers its shutdown to the loop: let it happen
            log.info("scheduler stopped")
        _runtime = None

    async def reconcile(self) -> None:
        """Make the job store match the windows, keeping unchanged jobs' next run times
        (replacing a job would recompute its next run and forget a missed one)."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        wanted = await self._wanted()
        existing = {job.id: job for job in scheduler.get_jobs()}
        for job_id in existing.keys() - wanted.keys():
            scheduler.remove_job(job_id)
        for name, window in wanted.items():
            trigger = CronWindowTrigger(window.cron, window.timezone)
            job = existing.get(name)
            if (
                job is not None
                and str(job.trigger) == str(trigger)
                and list(job.args) == [name, window.command]
            ):
                continue
            scheduler.add_job(
                "lanewarden.scheduler.windows:run_window",
                trigger=trigger,
                args=[name, window.command],
                id=name,
                name=name,
                replace_existing=True,
            )
            log.info("window %s scheduled: %s (%s) -> %s", name, window.cron, window.timezone, window.command)

    def request_reconcile(self) -> None:
        """Reconcile soon, once for a burst of wake-ups.

        On SQLite every commit anywhere wakes the topic (``data_version`` cannot say what
        changed), so requests arriving while one is pending or running fold into it, and
        the next runs at most every ``RECONCILE_EVERY`` seconds."""
        if self._reconcile_pending:
            return
        if self._loop is None:
            return
        self._reconcile_pending = True
        # wake-ups arrive on the SQLite watcher's thread as well as on the loop
        self._loop.call_soon_threadsafe(self._start_reconcile)

    def _start_reconcile(self) -> None:
        async def later() -> None:
            try:
                await asyncio.sleep(RECONCILE_EVERY)
                self._reconcile_pending = False
                await self.reconcile()
            except Exception:
                self._reconcile_pending = False
                log.exception("reconciling windows failed")

        task = asyncio.get_running_loop().create_task(later(), name="windows-reconcile")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wanted(self) -> dict[str, Window]:
        wanted = {w.name: w for w in await asyncio.to_thread(self.store.list)}
        wanted.update({w.name: w for w in self.builtin})
        return wanted

    def next_runs(self) -> dict[str, Any]:
        if self._scheduler is None:
            return {}
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    def _on_event(self, event: JobExecutionEvent) -> None:
        if (
            event.code == EVENT_JOB_EXECUTED
            and isinstance(event.retval, dict)
            and event.retval.get("skipped")
        ):
            log.info("window %s: %s", event.job_id, event.retval.get("summary"))
            if self.on_run:
                self.on_run(event.job_id, "skipped")
        elif event.code == EVENT_JOB_EXECUTED and isinstance(event.retval, dict):
            # audited here because only the listener knows which scheduled run this was
            outcome = event.retval
            data = {
                "window": event.job_id,
                "scheduled": event.scheduled_run_time.isoformat(),
                "holder": self.holder,
                **outcome,
            }
            kind = "window_ran" if outcome.get("ok") else "window_failed"
            message = f"window {event.job_id}: {outcome.get('summary')}"
            asyncio.get_running_loop().create_task(
                asyncio.to_thread(self.board.audit, f"scheduler:{event.job_id}", kind, message, data)
            )
            if self.on_run:
                self.on_run(event.job_id, "ok" if outcome.get("ok") else "failed")
        elif event.code == EVENT_JOB_MISSED:
            log.warning(
                "window %s missed its run at %s (more than %ss late): skipped",
                event.job_id,
                event.scheduled_run_time,
                self.misfire_grace_seconds,
            )
            if self.on_run:
                self.on_run(event.job_id, "missed")
        elif event.code == EVENT_JOB_ERROR:
            log.error("window %s crashed", event.job_id, exc_info=event.exception)
            if self.on_run:
                self.on_run(event.job_id, "error")
