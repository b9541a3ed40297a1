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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
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


@dataclass
class WindowRuntime:
    """What a firing job needs; set while this process leads (jobs are stored by reference)."""

    board: Board
    executor: Executor
    is_leader: Callable[[], bool]


_runtime: WindowRuntime | None = None


async def run_window(name: str, command: str) -> dict[str, Any]:
    """The job APScheduler calls (by reference ``scheduler.windows:run_window``)."""
    runtime = _runtime
    if runtime is None or not runtime.is_leader():
        log.warning("window %s fired on a process that does not hold the leader lease: skipped", name)
        return {"summary": "skipped: not the leader", "ok": False}
    return await asyncio.to_thread(_run_window_sync, runtime, name, command)


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
        _runtime = WindowRuntime(self.board, self.executor, self.is_leader)
        scheduler = AsyncIOScheduler(
            jobstores={"default": BoardJobStore(engine=self.board.db.engine, tablename=JOBS_TABLE)},
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
        wanted = {w.name: w for w in await asyncio.to_thread(self.store.list)}
        wanted.update({w.name: w for w in self.builtin})
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

    def next_runs(self) -> dict[str, Any]:
        if self._scheduler is None:
            return {}
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_EXECUTED and isinstance(event.retval, dict):
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
