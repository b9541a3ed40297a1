"""The claim kernel: the only code that moves tasks into and out of ``active``.

A claim takes a slot under all three caps (board, profile, gateway) or takes nothing,
in one transaction, whichever process or entry point asks:

* SQLite: the transaction starts with ``BEGIN IMMEDIATE``, so claimers are serialised
  by the database's write lock and each one counts the open runs committed before it.
* PostgreSQL: the transaction takes ``pg_advisory_xact_lock(CLAIM_LOCK)`` first (one
  lock, so no lock-order deadlocks), then picks tasks with ``FOR UPDATE SKIP LOCKED``
  so a task row held by a concurrent cancel or promote is skipped, never waited on.
  Under READ COMMITTED every statement after the lock sees all earlier claims.

Slots are counted from open runs (``finished_at IS NULL``), never from counters that
could drift. A run keeps its slot until its worker really stopped or its lease
expired, so a cancelled task never lets a new one start on a gateway that is still
busy with the old request.

Every write about a run carries its run id and dispatcher id (fencing): a worker
whose run was reclaimed can neither complete nor fail the task afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from lanewarden.core.board import Board, EventEntry, parents_pending
from lanewarden.core.caps import Limits, Usage
from lanewarden.core.db import CLAIM_LOCK
from lanewarden.core.gateway_state import update_gateway_window
from lanewarden.core.leases import RunLeases
from lanewarden.core.liveness import database_now
from lanewarden.core.schema import cap_overrides, runs, task_links, tasks
from lanewarden.core.statuses import INFRASTRUCTURE_OUTCOMES, TASK_ERROR_OUTCOMES, Outcome, Status
from lanewarden.core.tasks import Task
from sqlalchemy import Connection, bindparam, func, insert, select, text, update


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: int
    task: Task
    attempt: int
    gateway: str | None
    claimed_at: datetime
    ready_at: datetime  # when it became dispatchable, for the dispatch-delay metric

    @property
    def task_id(self) -> int:
        return self.task.id

    @property
    def profile(self) -> str:
        return self.task.profile


@dataclass(frozen=True, slots=True)
class Completion:
    """What a worker reports about its run."""

    run_id: int
    task_id: int
    outcome: str  # one of core.schema.RUN_OUTCOMES
    result: str | None = None
    error: str | None = None
    retryable: bool = True
    started_at: datetime | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    retry_after: float | None = None  # backpressure: seconds the gateway asked us to wait


@dataclass(frozen=True, slots=True)
class Finished:
    run_id: int
    task_id: int
    accepted: bool  # False: fenced out (the run was reclaimed or the task moved on)
    task_status: str | None = None
    note: str = ""


@dataclass
class ClaimKernel(RunLeases):
    board: Board
    dispatcher_id: str
    # per-process round robin: the profile served longest ago wins ties in priority
    _served: dict[str, int] = field(default_factory=dict)
    _turn: int = 0

    @property
    def db(self) -> Any:
        return self.board.db

    @property
    def config(self) -> Any:
        return self.board.config

    # ------------------------------------------------------------------ claim

    def claim(self, max_claims: int, *, now: datetime | None = None) -> list[Claim]:
        """Claim up to ``max_claims`` dispatchable tasks under all caps, atomically.

        Times (the lease, ``not_before``, backoffs) are the database's (core/liveness.py)."""
        lease = timedelta(seconds=self.config.kanban.dispatcher.lease_seconds)
        windowed = not self.config.kanban.dispatcher.enabled
        if not self._worth_claiming(windowed):
            return []
        with self.db.write() as conn:
            if self.db.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})
            now = now or database_now(conn)
            limits = Limits.load(conn, self.config)
            if limits.is_paused("board", ""):
                return []
            usage = Usage.load(conn)
            board_free = limits.board_cap - usage.total
            if board_free <= 0:
                return []
            profile_free, gateway_free = self._free_slots(limits, usage, now)
            heads: dict[str, list[Any]] = {}
            for profile, free in profile_free.items():
                gateway = self.config.profiles[profile].gateway
                room = min(free, board_free, max_claims)
                if gateway is not None:
                    room = min(room, gateway_free.get(gateway, 0))
                if room > 0:
                    rows = self._candidates(conn, profile, room, now, windowed)
                    if rows:
                        heads[profile] = rows
            chosen: list[tuple[Any, str | None]] = []
            while heads and len(chosen) < max_claims and board_free > 0:
                profile = self._pick(heads)
                row = heads[profile].pop(0)
                gateway = self.config.profiles[profile].gateway
                if not heads[profile]:
                    del heads[profile]
                if profile_free[profile] <= 0 or (gateway is not None and gateway_free.get(gateway, 0) <= 0):
                    heads.pop(profile, None)
                    continue
                chosen.append((row, gateway))
                board_free -= 1
                profile_free[profile] -= 1
                if gateway is not None:
                    gateway_free[gateway] -= 1
                self._turn += 1
                self._served[profile] = self._turn
            return self._take(conn, chosen, now, lease)

    def _worth_claiming(self, windowed: bool) -> bool:
        """A lock-free look before the serialised claim: is any slot free and any task ready?

        Every process wakes on every finish; most of them would take the claim lock only to
        find nothing. A stale "no" is harmless: whatever frees a slot or readies a task
        commits a wake-up that brings us back here."""
        ready = select(tasks.c.id).where(tasks.c.status == Status.READY)
        if windowed:
            ready = ready.where(tasks.c.released.is_(True))
        with self.db.read() as conn:
            active, waiting, board_cap = conn.execute(
                select(
                    select(func.count()).where(runs.c.finished_at.is_(None)).scalar_subquery(),
                    select(ready.limit(1).exists()).scalar_subquery(),
                    select(cap_overrides.c.value)
                    .where(cap_overrides.c.scope == "board", cap_overrides.c.name == "")
                    .scalar_subquery(),
                )
            ).one()
        cap = board_cap if board_cap is not None else self.config.kanban.dispatcher.max_active_tasks
        return bool(waiting) and active < cap

    def _free_slots(
        self, limits: Limits, usage: Usage, now: datetime
    ) -> tuple[dict[str, int], dict[str, int]]:
        gateway_free: dict[str, int] = {}
        for name, window in limits.gateways.items():
            if limits.is_paused("gateway", name) or window.healthy is False:
                continue
            if window.backoff_until is not None and window.backoff_until > now:
                continue
            gateway_free[name] = window.limit - usage.by_gateway.get(name, 0)
        profile_free: dict[str, int] = {}
        for name, cap in limits.profile_caps.items():
            if limits.is_paused("profile", name):
                continue
            gateway = self.config.profiles[name].gateway
            if gateway is not None and gateway_free.get(gateway, 0) <= 0:
                continue
            free = cap - usage.by_profile.get(name, 0)
            if free > 0:
                profile_free[name] = free
        return profile_free, gateway_free

    def _candidates(
        self, conn: Connection, profile: str, limit: int, now: datetime, windowed: bool
    ) -> list[Any]:
        query = (
            select(tasks)
            .where(
                tasks.c.status == Status.READY,
                tasks.c.profile == profile,
                (tasks.c.not_before.is_(None)) | (tasks.c.not_before <= now),
                ~parents_pending(),
            )
            .order_by(tasks.c.priority.desc(), tasks.c.id)
            .limit(limit)
        )
        if windowed:
            query = query.where(tasks.c.released.is_(True))
        if self.db.is_postgres:
            query = query.with_for_update(skip_locked=True, of=tasks)
        return list(conn.execute(query))

    def _pick(self, heads: dict[str, list[Any]]) -> str:
        """Highest priority first; among equals the profile served longest ago, then age."""
        return min(
            heads,
            key=lambda p: (-heads[p][0].priority, self._served.get(p, 0), heads[p][0].id),
        )

    def _take(
        self, conn: Connection, chosen: list[tuple[Any, str | None]], now: datetime, lease: timedelta
    ) -> list[Claim]:
        """Open a run for each chosen task and mark it active: a few statements for the whole batch."""
        if not chosen:
            return []
        ids = [row.id for row, _ in chosen]
        earlier = dict(
            conn.execute(
                select(runs.c.task_id, func.count()).where(runs.c.task_id.in_(ids)).group_by(runs.c.task_id)
            ).all()
        )
        new_runs = [
            {
                "task_id": row.id,
                "attempt": earlier.get(row.id, 0) + 1,
                "dispatcher": self.dispatcher_id,
                "profile": row.profile,
                "gateway": gateway,
                "claimed_at": now,
                "ready_at": _ready_at(row),
                "lease_expires_at": now + lease,
            }
            for row, gateway in chosen
        ]
        run_ids = conn.execute(_INSERT_RUN, new_runs).scalars().all()
        conn.execute(
            _MARK_ACTIVE,
            [
                {"b_task": row.id, "b_run": rid, "b_now": now}
                for (row, _), rid in zip(chosen, run_ids, strict=True)
            ],
        )
        claims, entries = [], []
        for (row, gateway), run_id, new_run in zip(chosen, run_ids, new_runs, strict=True):
            task = replace(
                Task.from_row(row),
                status=Status.ACTIVE,
                current_run_id=run_id,
                released=False,
                started_at=now,
                updated_at=now,
            )
            where = f" on {gateway}" if gateway else ""
            entries.append(
                EventEntry(
                    task,
                    self.dispatcher_id,
                    "started",
                    f"attempt {new_run['attempt']} started by {self.dispatcher_id}{where}",
                    {"run": run_id},
                )
            )
            claims.append(Claim(run_id, task, new_run["attempt"], gateway, now, new_run["ready_at"]))
        self.board.record_many(conn, entries, now)
        return claims

    def _locked(self, query: Any) -> Any:
        """Row locks on PostgreSQL; SQLite's write transaction already excludes everyone."""
        return query.with_for_update() if self.db.is_postgres else query

    # ----------------------------------------------------------------- finish

    def finish(self, completions: Sequence[Completion]) -> list[Finished]:
        """Record what workers report, in one transaction (group commit), fenced by run id."""
        if not completions:
            return []
        with self.db.write() as conn:
            now = database_now(conn)
            query = (
                select(
                    runs.c.id.label("run_id"),
                    runs.c.gateway,
                    runs.c.finished_at.label("run_finished_at"),
                    tasks,
                )
                .join(tasks, tasks.c.id == runs.c.task_id)
                .where(
                    runs.c.id.in_([c.run_id for c in completions]), runs.c.dispatcher == self.dispatcher_id
                )
            )
            found = {r.run_id: r for r in conn.execute(self._locked(query))}
            results: list[Finished] = []
            run_updates: list[dict[str, Any]] = []
            task_updates: list[dict[str, Any]] = []
            entries: list[EventEntry] = []
            windows: dict[str, list[Completion]] = {}
            for done in completions:
                row = found.get(done.run_id)
                if row is None or row.run_finished_at is not None:
                    results.append(
                        Finished(done.run_id, done.task_id, False, note="run was already closed (reclaimed)")
                    )
                    continue
                task = Task.from_row(row)
                owns_task = task.status == Status.ACTIVE and task.current_run_id == done.run_id
                run_updates.append(_run_values(done, done.outcome if owns_task else "cancelled", now))
                if row.gateway is not None:
                    windows.setdefault(row.gateway, []).append(done)
                if not owns_task:
                    # cancelled, blocked or moved while running: the work is discarded
                    results.append(
                        Finished(
                            done.run_id,
                            task.id,
                            False,
                            task.status,
                            note=f"task is {task.status}; result discarded",
                        )
                    )
                    continue
                values, kind, message = self._outcome(task, done, now)
                task_updates.append(values)
                updated = replace(
                    task,
                    **{k.removeprefix("b_"): v for k, v in values.items() if k not in ("b_task", "b_now")},
                    updated_at=now,
                )
                entries.append(
                    EventEntry(
                        updated,
                        self.dispatcher_id,
                        kind,
                        message,
                        {"run": done.run_id, "outcome": done.outcome},
                    )
                )
                results.append(Finished(done.run_id, task.id, True, values["b_status"]))
            if run_updates:
                conn.execute(_CLOSE_RUN, run_updates)
            if task_updates:
                conn.execute(_SET_OUTCOME, task_updates)
            for gateway, finished in windows.items():
                update_gateway_window(conn, self.config, gateway, finished, now)
            self.board.record_many(conn, entries, now)
            if run_updates:
                self.board.signal(conn, "dispatch")
        return results

    def _outcome(self, task: Task, done: Completion, now: datetime) -> tuple[dict[str, Any], str, str]:
        """The task's new values (as bind parameters), the event kind and its message."""
        values = {
            "b_task": task.id,
            "b_now": now,
            "b_status": "ready",
            "b_result": task.result,
            "b_error": task.error,
            "b_attempts": task.attempts,
            "b_not_before": task.not_before,
            "b_finished_at": None,
        }
        if done.outcome == Outcome.SUCCEEDED:
            values.update(
                b_status="done",
                b_result=done.result,
                b_error=None,
                b_attempts=task.attempts + 1,
                b_finished_at=now,
            )
            return values, "succeeded", f"done in {_seconds(done.latency_ms)}"
        if done.outcome in TASK_ERROR_OUTCOMES:
            attempts = task.attempts + 1
            values.update(b_error=done.error, b_attempts=attempts)
            if done.retryable and attempts < task.max_attempts:
                delay = self._backoff(attempts)
                values.update(b_not_before=now + timedelta(seconds=delay))
                return (
                    values,
                    "retry_scheduled",
                    (f"attempt {attempts}/{task.max_attempts} {_describe(done)}; retry in {delay:.0f}s"),
                )
            values.update(b_status="failed", b_finished_at=now)
            why = "" if done.retryable else " (not retryable)"
            return values, "failed", f"failed after {attempts} attempt(s){why}: {_describe(done)}"
        if done.outcome in INFRASTRUCTURE_OUTCOMES:
            return values, "requeued", f"back to ready without using an attempt: {_describe(done)}"
        raise ValueError(f"unexpected outcome {done.outcome!r}")

    def _backoff(self, attempts: int) -> float:
        cfg = self.config.kanban.dispatcher
        delay = min(cfg.retry_backoff_max_seconds, cfg.retry_backoff_seconds * (2 ** (attempts - 1)))
        return delay * random.uniform(0.8, 1.2)  # jitter keeps retries of a batch from re-colliding

    def release(self, run_ids: Iterable[int], outcome: str, error: str) -> int:
        """Give runs back (drain, shutdown) without using an attempt."""
        completions = [Completion(run_id=rid, task_id=0, outcome=outcome, error=error) for rid in run_ids]
        return sum(1 for f in self.finish(completions) if f.accepted)

    def parent_results(self, task_id: int) -> list[tuple[int, str, str]]:
        """(id, title, result) of each parent, for the runner's context."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(tasks.c.id, tasks.c.title, tasks.c.result)
                .join(task_links, task_links.c.parent_id == tasks.c.id)
                .where(task_links.c.child_id == task_id)
                .order_by(tasks.c.id)
            )
            return [(r.id, r.title, r.result or "") for r in rows]


_INSERT_RUN = insert(runs).returning(runs.c.id, sort_by_parameter_order=True)
_MARK_ACTIVE = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_task"))
    .values(
        status=Status.ACTIVE,
        current_run_id=bindparam("b_run"),
        released=False,
        started_at=bindparam("b_now"),
        updated_at=bindparam("b_now"),
    )
)
_CLOSE_RUN = (
    update(runs)
    .where(runs.c.id == bindparam("b_run"), runs.c.finished_at.is_(None))
    .values(
        finished_at=bindparam("b_now"),
        outcome=bindparam("b_outcome"),
        started_at=bindparam("b_started"),
        latency_ms=bindparam("b_latency"),
        ttft_ms=bindparam("b_ttft"),
        prompt_tokens=bindparam("b_prompt"),
        completion_tokens=bindparam("b_completion"),
        error=bindparam("b_error"),
    )
)
_SET_OUTCOME = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_task"))
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        attempts=bindparam("b_attempts"),
        not_before=bindparam("b_not_before"),
        finished_at=bindparam("b_finished_at"),
        updated_at=bindparam("b_now"),
    )
)


def _run_values(done: Completion, outcome: str, now: datetime) -> dict[str, Any]:
    return {
        "b_run": done.run_id,
        "b_now": now,
        "b_outcome": outcome,
        "b_started": done.started_at,
        "b_latency": done.latency_ms,
        "b_ttft": done.ttft_ms,
        "b_prompt": done.prompt_tokens,
        "b_completion": done.completion_tokens,
        "b_error": done.error,
    }


def _ready_at(row: Any) -> datetime:
    """When the task became dispatchable: its last change, or its not_before if later."""
    if row.not_before is not None and row.not_before > row.updated_at:
        return row.not_before
    return row.updated_at


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"


def _describe(done: Completion) -> str:
    label = {
        "timed_out": "timed out",
        "gateway_down": "gateway down",
        "backpressure": "gateway busy",
        "released": "released on shutdown",
        "lost": "dispatcher lost",
    }.get(done.outcome, done.outcome)
    return f"{label}: {done.error}" if done.error else label
