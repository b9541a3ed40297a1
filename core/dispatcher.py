"""The dispatcher: claim, run, heartbeat, finish. One per ``serve`` process.

The loop is short on purpose:

* claim as many tasks as the caps allow (``ClaimKernel.claim``), start a worker each;
* sleep until something may have changed (an add, promote, finish or cap change in
  this process, another process's commit, or the poll interval as a safety net);
* a heartbeat renews our leases, stops workers whose task was cancelled or blocked,
  measures this host's clock against the database's, and reclaims runs whose
  dispatcher died;
* after losing the database, the first heartbeat renews our own leases and nothing is
  reclaimed for one lease period: the other processes lost it too and need their turn
  to renew; every retry wakes at once on a sign the database is back;
* workers report completions to a queue that one flusher writes in batches (group
  commit), fenced by run id.

All database work runs in threads so the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from lanewarden.core import workspaces
from lanewarden.core.board import Board
from lanewarden.core.claims import Claim, ClaimKernel, Completion, Finished
from lanewarden.core.clock import utcnow
from lanewarden.core.config import lanewarden_home
from lanewarden.core.liveness import database_now, describe_skew, measure_skew, skew_is_large
from lanewarden.core.processes import identify
from lanewarden.core.redaction import redact, secret_values
from lanewarden.core.run_output import FLUSH_SECONDS, OutputRecorder
from lanewarden.core.runners import GatewayBusy, GatewayDown, Job, Runner, TaskFailed
from lanewarden.core.runners.command import CommandRunner
from lanewarden.core.runners.llm import LLMRunner
from lanewarden.core.runners.noop import NoopRunner
from lanewarden.core.schema import dispatchers
from lanewarden.core.workspaces import board_key, run_directory
from sqlalchemy import insert, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

log = logging.getLogger("lanewarden.dispatcher")
T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 600.0
WORKSPACE_SWEEP_SECONDS = 3600.0


def new_dispatcher_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(2)}"


# what a lost or restarted database raises: SQLAlchemy's errors (a killed connection is
# not always a DBAPIError: a transaction it left behind is a PendingRollbackError) and
# the socket's own
DATABASE_ERRORS = (SQLAlchemyError, OSError)
# how long a shutdown waits for the last completions to reach the database
FLUSH_ON_EXIT_SECONDS = 30.0


def _why(exc: BaseException) -> object:
    return getattr(exc, "orig", None) or f"{type(exc).__name__}: {exc}"


def _report_crash(task: asyncio.Task[Any]) -> None:
    """A dispatcher loop must never end unnoticed: it would stop claiming or heartbeating."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped with an error", task.get_name(), exc_info=task.exception())


def default_runners() -> dict[str, Runner]:
    return {"llm": LLMRunner(), "command": CommandRunner(), "noop": NoopRunner()}


@dataclass
class DispatchObserver:
    """Hooks for metrics; the default does nothing."""

    def claimed(self, claim: Claim) -> None: ...

    def finished(self, completion: Completion, result: Finished, gateway: str | None) -> None: ...


class Dispatcher:
    def __init__(
        self,
        board: Board,
        *,
        dispatcher_id: str | None = None,
        runners: dict[str, Runner] | None = None,
        workspace_root: Path | None = None,
        observer: DispatchObserver | None = None,
    ) -> None:
        self.board = board
        self.config = board.config
        self.id = dispatcher_id or new_dispatcher_id()
        self.kernel = ClaimKernel(board, self.id)
        self.runners = runners or default_runners()
        # command agents work under <root>/<board key>/task-N-run-M (core/workspaces.py)
        self.workspaces = (workspace_root or lanewarden_home() / "workspaces") / board_key(board.db.url)
        self._next_sweep = 0.0
        self.observer = observer or DispatchObserver()
        self.workers: dict[int, asyncio.Task[None]] = {}
        self._gateway_of: dict[int, str | None] = {}
        self._stop_reasons: dict[int, str] = {}
        self._completions: asyncio.Queue[Completion] = asyncio.Queue()
        self._unflushed = 0
        self._flushed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._check_stops = asyncio.Event()
        # set by any wake-up (the database answered someone): cut a retry's backoff short
        self._heartbeat_retry = asyncio.Event()
        self._flush_retry = asyncio.Event()
        # monotonic time before which we reclaim nothing (set when the database comes back)
        self._reclaim_after = 0.0
        self._db_lost = False
        self.clock_skew: float | None = None  # seconds this host is ahead of the database
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False
        self._closing = False
        self._tasks: list[asyncio.Task[Any]] = []
        board.subscribe(self.wake)

    # ---------------------------------------------------------------- wakeups

    def wake(self, topic: str = "dispatch") -> None:
        """Thread-safe: something may be dispatchable (or must stop) now."""
        if topic not in ("dispatch", "stop"):
            return  # board, outbox, windows: nothing for the dispatcher
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        event = self._check_stops if topic == "stop" else self._wake
        try:
            loop.call_soon_threadsafe(event.set)
            loop.call_soon_threadsafe(self._heartbeat_retry.set)
            loop.call_soon_threadsafe(self._flush_retry.set)
        except RuntimeError:  # loop closing
            pass

    # ------------------------------------------------------------- life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._db(self._register)
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="claim-loop"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat-loop"),
            asyncio.create_task(self._stop_loop(), name="stop-loop"),
            asyncio.create_task(self._flush_loop(), name="flush-loop"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_crash)
        log.info(
            "dispatcher %s started (%s)",
            self.id,
            "continuous" if self.config.kanban.dispatcher.enabled else "windowed: released tasks only",
        )

    async def drain(self, timeout: float | None = None) -> None:
        """Stop claiming; let running work finish for ``timeout``; release the rest to ready."""
        if self._closing:
            return
        self._closing = True
        self.draining = True
        self._wake.set()
        await self._db(self._set_state, "draining")
        timeout = self.config.kanban.dispatcher.drain_timeout_seconds if timeout is None else timeout
        running = list(self.workers.values())
        if running:
            log.info("draining: waiting up to %.0fs for %d running task(s)", timeout, len(running))
            await asyncio.wait(running, timeout=timeout)
        leftover = list(self.workers.items())
        for run_id, worker in leftover:
            self._stop_reasons[run_id] = "drain"
            worker.cancel()
        if leftover:
            await asyncio.wait([w for _, w in leftover], timeout=10)
            log.info("released %d task(s) back to ready", len(leftover))
        try:  # bounded: a flush loop that died (logged by _report_crash) must not hang a shutdown
            await asyncio.wait_for(self._wait_flushed(), timeout=FLUSH_ON_EXIT_SECONDS)
        except TimeoutError:
            log.warning("%d completion(s) not recorded on exit; their runs go back to ready", self._unflushed)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for runner in self.runners.values():
            await runner.aclose()
        await self._db(self._set_state, "stopped")

    # ------------------------------------------------------------------ loops

    async def _claim_loop(self) -> None:
        cfg = self.config.kanban.dispatcher
        batch = cfg.max_claims_per_transaction
        failures = 0
        while not self.draining:
            self._wake.clear()
            try:
                claims = await self._db(self.kernel.claim, batch)
                failures = 0
            except DATABASE_ERRORS as exc:
                failures += 1
                delay = min(10.0, 0.5 * 2**failures)
                log.warning("claim failed (database unavailable?): %s; retrying in %.1fs", _why(exc), delay)
                await self._backoff(self._wake, delay)
                continue
            for claim in claims:
                self._start_worker(claim)
            if len(claims) == batch:
                continue  # more may be waiting right now
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=cfg.poll_interval_seconds)
            except TimeoutError:
                pass

    async def _heartbeat_loop(self) -> None:
        cfg = self.config.kanban.dispatcher
        while True:
            if self._db_lost:  # retry soon, and at once on any sign the database is back
                await self._backoff(self._heartbeat_retry, min(1.0, cfg.heartbeat_seconds))
            else:
                await asyncio.sleep(cfg.heartbeat_seconds)
            try:
                # our own leases first, then the liveness row: both before any reclaim
                stops = await self._db(self.kernel.heartbeat, list(self.workers))
                self._stop(stops)
                await self._db(self._touch)
                if self._db_lost:
                    self._db_lost = False
                    self._reclaim_after = time.monotonic() + cfg.lease_seconds
                    log.info(
                        "database back: leases renewed; reclaiming nothing for %.0fs so every process "
                        "can renew its own",
                        cfg.lease_seconds,
                    )
                if time.monotonic() >= self._reclaim_after:
                    reclaimed = await self._db(self.kernel.reclaim_expired)
                    if reclaimed:
                        log.warning(
                            "reclaimed %d run(s) whose dispatcher stopped heartbeating", len(reclaimed)
                        )
                if time.monotonic() >= self._next_sweep:
                    self._next_sweep = time.monotonic() + WORKSPACE_SWEEP_SECONDS
                    await self._db(self._sweep_workspaces)
            except DATABASE_ERRORS as exc:
                self._db_lost = True
                log.warning("heartbeat failed (database unavailable?): %s", _why(exc))

    async def _backoff(self, event: asyncio.Event, delay: float) -> None:
        """Sleep ``delay`` or until ``event`` (a wake-up, also one that came during the failed
        attempt: the database answered someone, so try again now)."""
        try:
            await asyncio.wait_for(event.wait(), timeout=delay)
        except TimeoutError:
            pass
        if event is not self._wake:  # the claim loop clears its own event before each claim
            event.clear()

    async def _stop_loop(self) -> None:
        """Cancel and block reach a worker in this process at once, not at the next heartbeat."""
        while True:
            await self._check_stops.wait()
            self._check_stops.clear()
            if not self.workers:
                continue
            try:
                self._stop(await self._db(self.kernel.stop_requests, list(self.workers)))
            except DATABASE_ERRORS as exc:
                log.warning("stop check failed: %s", _why(exc))

    def _stop(self, stops: dict[int, str]) -> None:
        for run_id, reason in stops.items():
            worker = self.workers.get(run_id)
            if worker is not None and run_id not in self._stop_reasons:
                log.info("stopping run %d: task %s", run_id, reason)
                self._stop_reasons[run_id] = reason
                worker.cancel()

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            first = await self._completions.get()
            batch = [first]
            while not self._completions.empty():
                batch.append(self._completions.get_nowait())
            while True:
                try:
                    results = await self._db(self.kernel.finish, batch)
                    failures = 0
                    break
                except DATABASE_ERRORS as exc:
                    failures += 1
                    delay = min(10.0, 0.5 * 2**failures)
                    log.warning(
                        "could not record %d completion(s): %s; retrying in %.1fs",
                        len(batch),
                        _why(exc),
                        delay,
                    )
                    await self._backoff(self._flush_retry, delay)
            for completion, result in zip(batch, results, strict=True):
                gateway = self._gateway_of.pop(completion.run_id, None)
                self.observer.finished(completion, result, gateway)
                if not result.accepted:
                    log.info(
                        "run %d of #%d not recorded: %s", completion.run_id, completion.task_id, result.note
                    )
            async with self._flushed:
                self._unflushed -= len(batch)
                self._flushed.notify_all()
            self._wake.set()  # slots were freed

    async def _wait_flushed(self) -> None:
        async with self._flushed:
            await self._flushed.wait_for(lambda: self._unflushed == 0)

    # ---------------------------------------------------------------- workers

    def _start_worker(self, claim: Claim) -> None:
        self.observer.claimed(claim)
        self._gateway_of[claim.run_id] = claim.gateway
        worker = asyncio.create_task(self._work(claim), name=f"run-{claim.run_id}")
        self.workers[claim.run_id] = worker

    async def _work(self, claim: Claim) -> None:
        started_at = self.database_time()
        t0 = time.monotonic()
        completion: Completion | None = None
        try:
            completion = await self._execute(claim, started_at, t0)
        except asyncio.CancelledError:
            reason = self._stop_reasons.pop(claim.run_id, "shutdown")
            latency = (time.monotonic() - t0) * 1000
            if reason == "drain" or reason == "shutdown":
                completion = Completion(
                    claim.run_id,
                    claim.task_id,
                    "released",
                    started_at=started_at,
                    error=f"released by {self.id} on shutdown",
                    latency_ms=latency,
                )
            elif reason != "reclaimed":
                await asyncio.shield(
                    self._db(self.kernel.close_stopped, claim.run_id, reason, latency_ms=latency)
                )
        finally:
            self.workers.pop(claim.run_id, None)
            if completion is not None:
                self._unflushed += 1
                self._completions.put_nowait(completion)
            else:
                self._gateway_of.pop(claim.run_id, None)
                self._wake.set()
            # after the completion is queued: nothing here may keep a result from the board
            outcome = completion.outcome if completion is not None else "cancelled"
            path = run_directory(self.workspaces, claim.task_id, claim.run_id)
            if path.exists():
                rule = self.config.kanban.workers.keep_workspaces
                await asyncio.shield(self._db(workspaces.discard, path, outcome, rule))

    async def _execute(self, claim: Claim, started_at: Any, t0: float) -> Completion:
        def done(outcome: str, **kw: Any) -> Completion:
            # an agent may print what it should not have seen: keep secrets off the board
            hidden = secret_values(self.config)
            for key in ("result", "error"):
                if key in kw:
                    kw[key] = redact(kw[key], hidden)
            return Completion(
                claim.run_id,
                claim.task_id,
                outcome,
                started_at=started_at,
                latency_ms=(time.monotonic() - t0) * 1000,
                **kw,
            )

        profile = self.config.profiles.get(claim.profile)
        if profile is None:
            return done("failed", error=f"profile {claim.profile!r} is not configured", retryable=False)
        gateway = self.config.gateways.get(profile.gateway) if profile.gateway else None
        runner = self.runners.get(profile.runner)
        if runner is None:
            return done("failed", error=f"no runner {profile.runner!r}", retryable=False)
        parents = (
            [] if profile.runner == "noop" else await self._db(self.kernel.parent_results, claim.task_id)
        )
        recorder = OutputRecorder(claim.run_id, secret_values(self.config))
        job = Job(
            claim,
            claim.profile,
            profile,
            gateway,
            parents,
            self.workspaces,
            on_process=functools.partial(self._record_process, claim.run_id),
            on_output=recorder.write,
        )
        timeout = profile.timeout_seconds or (gateway.timeout_seconds if gateway else DEFAULT_TIMEOUT_SECONDS)
        pump = asyncio.create_task(self._pump_output(recorder), name=f"output-{claim.run_id}")
        try:
            return await self._run_job(runner, job, timeout, done)
        finally:
            pump.cancel()
            # the rest of the output is on the board before the run's outcome is
            await asyncio.shield(self._db(recorder.flush, self.board.db, self.database_time(), final=True))

    async def _pump_output(self, recorder: OutputRecorder) -> None:
        """A running run's output reaches the board as it comes (``logs --follow``)."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self._db(recorder.flush, self.board.db, self.database_time())

    async def _run_job(
        self, runner: Runner, job: Job, timeout: float, done: Callable[..., Completion]
    ) -> Completion:
        profile = job.profile
        try:
            async with asyncio.timeout(timeout):
                output = await runner.run(job)
        except TimeoutError as exc:
            detail = str(exc) or f"no result after {timeout:g}s"
            return done("timed_out", error=detail)
        except TaskFailed as exc:
            return done("failed", error=str(exc), retryable=exc.retryable)
        except GatewayDown as exc:
            return done("gateway_down", error=str(exc))
        except GatewayBusy as exc:
            return done("backpressure", error=str(exc), retry_after=exc.retry_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a runner must not take the dispatcher down
            log.exception("runner %s crashed on #%d", profile.runner, job.claim.task_id)
            return done("failed", error=f"runner crashed: {type(exc).__name__}: {exc}")
        return done(
            "succeeded",
            result=output.text,
            ttft_ms=output.ttft_ms,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
        )

    # --------------------------------------------------- agents and workspaces

    async def _record_process(self, run_id: int, pid: int) -> None:
        """Where the run's agent runs, so a leftover can be killed after a crash."""
        identity = identify(pid)
        if identity is None:
            return
        try:
            await self._db(self.kernel.record_process, run_id, identity)
        except DBAPIError as exc:  # the lease still protects the run; only the cleanup is weaker
            log.warning("could not record the process of run %d: %s", run_id, exc.orig)

    def _sweep_workspaces(self) -> None:
        """The retention rule for workspaces whose runs ended without us (a crash, another host)."""
        try:
            directories = workspaces.run_ids_in(self.workspaces)
        except OSError as exc:  # an unreadable workspace root must not stop the heartbeat
            log.warning("cannot sweep workspaces under %s: %s", self.workspaces, exc)
            return
        if not directories:
            return
        outcomes, still_open = self.kernel.run_outcomes(list(directories))
        cfg = self.config.kanban.workers
        removed = workspaces.sweep(
            directories, outcomes, still_open, cfg.keep_workspaces, cfg.keep_workspaces_days
        )
        if removed:
            log.info("removed %d workspace(s) under %s", len(removed), self.workspaces)

    # ----------------------------------------------------------------- helpers

    def database_time(self) -> datetime:
        """This host's clock corrected by the skew measured at the last heartbeat: the
        database's time without a round trip, for timestamps (never for leases)."""
        return utcnow() - timedelta(seconds=self.clock_skew or 0.0)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _register(self) -> None:
        with self.board.db.write() as conn:
            skew = self._measure(conn)
            now = database_now(conn)
            conn.execute(
                insert(dispatchers).values(
                    id=self.id,
                    host=socket.gethostname()[:128],
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                    state="running",
                    clock_skew_ms=skew * 1000,
                )
            )

    def _touch(self) -> None:
        """The liveness row, on the database's clock, with this host's skew against it."""
        with self.board.db.write() as conn:
            skew = self._measure(conn)
            conn.execute(
                update(dispatchers)
                .where(dispatchers.c.id == self.id)
                .values(heartbeat_at=database_now(conn), clock_skew_ms=skew * 1000)
            )

    def _measure(self, conn: Any) -> float:
        skew = measure_skew(conn)
        was_large = skew_is_large(self.clock_skew)
        if skew_is_large(skew) and (self.clock_skew is None or not was_large):
            log.warning(
                "this host's %s: leases and windows use the database's clock and are not affected, "
                "but fix the host's time (NTP): its logs and cron times are off",
                describe_skew(skew),
            )
        elif was_large and not skew_is_large(skew):
            log.info("this host's %s again", describe_skew(skew))
        self.clock_skew = skew
        return skew

    def _set_state(self, state: str) -> None:
        with self.board.db.write() as conn:
            conn.execute(
                update(dispatchers)
                .where(dispatchers.c.id == self.id)
                .values(state=state, heartbeat_at=database_now(conn))
            )
