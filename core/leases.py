"""Run leases: heartbeats, stop requests, and taking back the runs of a dispatcher that
stopped heartbeating (a mixin of ``ClaimKernel``, core/claims.py).

Every comparison is on the database's clock (core/liveness.py), never a host's, and a
run's slot is freed only once its agent process is known to be gone (core/processes.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lanewarden.core.liveness import database_now
from lanewarden.core.processes import ProcessIdentity, safe_to_free
from lanewarden.core.schema import runs, tasks
from lanewarden.core.statuses import Outcome, Status
from lanewarden.core.tasks import Task
from sqlalchemy import Connection, select, text, update

if TYPE_CHECKING:
    from lanewarden.core.board import Board


class RunLeases:
    board: Board
    dispatcher_id: str

    if TYPE_CHECKING:  # provided by ClaimKernel

        @property
        def db(self) -> Any: ...

        @property
        def config(self) -> Any: ...

    def heartbeat(self, run_ids: Iterable[int], now: datetime | None = None) -> dict[int, str]:
        """Renew the leases of our open runs; return runs to stop, with the reason."""
        ids = list(run_ids)
        if not ids:
            return {}
        lease = timedelta(seconds=self.config.kanban.dispatcher.lease_seconds)
        with self.db.write() as conn:
            now = now or database_now(conn)
            conn.execute(
                update(runs)
                .where(
                    runs.c.id.in_(ids), runs.c.dispatcher == self.dispatcher_id, runs.c.finished_at.is_(None)
                )
                .values(lease_expires_at=now + lease)
            )
        return self.stop_requests(ids)

    def stop_requests(self, run_ids: Iterable[int]) -> dict[int, str]:
        ids = list(run_ids)
        if not ids:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.stop_requested, runs.c.finished_at).where(
                    runs.c.id.in_(ids),
                    (runs.c.stop_requested.is_not(None)) | (runs.c.finished_at.is_not(None)),
                )
            )
            return {r.id: (r.stop_requested or "reclaimed") for r in rows}

    def close_stopped(self, run_id: int, reason: str, *, latency_ms: float | None = None) -> None:
        """The worker of a cancelled/blocked/moved task has stopped: free its slot."""
        with self.db.write() as conn:
            now = database_now(conn)
            closed = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id, runs.c.dispatcher == self.dispatcher_id, runs.c.finished_at.is_(None)
                )
                .values(
                    finished_at=now,
                    outcome=Outcome.CANCELLED,
                    error=f"stopped: {reason}",
                    latency_ms=latency_ms,
                )
            ).rowcount
            if closed:
                self.board.signal(conn, "dispatch")

    def reclaim_expired(self, now: datetime | None = None) -> list[int]:
        """Any dispatcher may close runs whose lease expired and requeue their tasks, once
        their agent process is known to be gone (``_leftovers_gone``).

        Expiry is judged on the database's clock. Right after the database itself came
        back (PostgreSQL's start time less than a lease ago) nothing is reclaimed: every
        owner lost its connection too and gets one lease period to renew. The owner is
        told at once (``stop``), not at its next heartbeat."""
        lease = timedelta(seconds=self.config.kanban.dispatcher.lease_seconds)
        with self.db.read() as conn:
            now = now or database_now(conn)
            if self.db.is_postgres and now - _database_started_at(conn) < lease:
                return []
        gone = self._leftovers_gone(now)
        if not gone:
            return []
        reclaimed = []
        with self.db.write() as conn:
            query = select(runs.c.id, runs.c.task_id, runs.c.stop_requested, runs.c.dispatcher).where(
                runs.c.finished_at.is_(None), runs.c.lease_expires_at < now, runs.c.id.in_(gone)
            )
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            for row in conn.execute(query).all():
                outcome = Outcome.CANCELLED if row.stop_requested else "lost"
                conn.execute(
                    update(runs)
                    .where(runs.c.id == row.id, runs.c.finished_at.is_(None))
                    .values(
                        finished_at=now,
                        outcome=outcome,
                        error=f"lease expired: dispatcher {row.dispatcher} stopped heartbeating",
                    )
                )
                task = Task.from_row(conn.execute(select(tasks).where(tasks.c.id == row.task_id)).one())
                if task.status == Status.ACTIVE and task.current_run_id == row.id:
                    conn.execute(
                        update(tasks).where(tasks.c.id == task.id).values(status=Status.READY, updated_at=now)
                    )
                    requeued = Task.from_row(conn.execute(select(tasks).where(tasks.c.id == task.id)).one())
                    self.board.record(
                        conn,
                        self.dispatcher_id,
                        "requeued",
                        f"back to ready without using an attempt: {row.dispatcher} stopped heartbeating",
                        task=requeued,
                        data={"run": row.id, "outcome": "lost"},
                        now=now,
                    )
                reclaimed.append(row.id)
            if reclaimed:
                self.board.signal(conn, "dispatch")
                # the old owner, if it is alive after all, stops its worker now
                self.board.signal(conn, "stop")
        return reclaimed

    def _leftovers_gone(self, now: datetime) -> list[int]:
        """The expired runs whose slot may be freed: no recorded agent process, or one this
        host has killed and seen gone, or one on another host (its lease is all we have;
        its dispatcher's death killed the agent itself there). Killing happens here,
        outside any transaction."""
        with self.db.read() as conn:
            expired = conn.execute(
                select(runs.c.id, runs.c.host, runs.c.process_group, runs.c.process_start).where(
                    runs.c.finished_at.is_(None), runs.c.lease_expires_at < now
                )
            ).all()
        return [
            row.id
            for row in expired
            if safe_to_free(row.id, row.host, row.process_group, row.process_start) is not False
        ]

    def record_process(self, run_id: int, identity: ProcessIdentity) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.dispatcher == self.dispatcher_id)
                .values(
                    host=identity.host,
                    process_group=identity.process_group,
                    process_start=identity.process_start,
                )
            )

    def run_outcomes(self, run_ids: Sequence[int]) -> tuple[dict[int, str | None], list[int]]:
        """Outcomes of the finished runs among ``run_ids``, and which of them are still open."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(runs.c.id, runs.c.outcome, runs.c.finished_at).where(runs.c.id.in_(run_ids))
            ).all()
        finished = {r.id: r.outcome for r in rows if r.finished_at is not None}
        return finished, [r.id for r in rows if r.finished_at is None]


def _database_started_at(conn: Connection) -> datetime:
    return conn.execute(text("SELECT pg_postmaster_start_time()")).scalar_one()
