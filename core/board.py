"""Board operations: every change is one short transaction that also appends its event
(with the actor) and the outbox rows for the chat channels that follow the task.

The lanes are backlog -> ready -> active -> done, with failed, blocked and cancelled
on the side. Only the dispatcher (core/claims.py) moves a task into ``active``;
``promote --column active`` and ``promote-batch --to active`` *release* ready tasks,
which then start as soon as the caps allow, never above them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.controls import Controls
from lanewarden.core.db import Database, ensure_schema
from lanewarden.core.edits import (
    MAX_ATTEMPTS_RANGE,
    PRIORITY_RANGE,
    Edits,
    check_length,
    check_range,
    clean_body,
    clean_title,
)
from lanewarden.core.errors import Conflict, NotFound, UsageError
from lanewarden.core.lanes import lane_condition, not_yet, parents_pending, select_tasks
from lanewarden.core.links import Links
from lanewarden.core.notifications import (
    TaskNote,
    fan_out_notice,
    fan_out_task_events,
    may_direct_message,
    parse_channel,
    task_channels,
)
from lanewarden.core.schema import COMMENT_MAX, events, runs, task_links, tasks
from lanewarden.core.statuses import OPEN_STATUSES, TASK_STATUSES, Status
from lanewarden.core.task_view import task_detail
from lanewarden.core.tasks import Event, Task, TaskDetail
from sqlalchemy import Connection, func, insert, or_, select, text, update

LIST_LIMIT_MAX = 1000
PROMOTE_BATCH_MAX = 1000

# the moves a person may make with `move`; the dispatcher's own transitions are in claims.py
MOVES: dict[str, frozenset[str]] = {
    "backlog": frozenset({"ready", "done"}),
    "ready": frozenset({"backlog", "done"}),
    "active": frozenset({"backlog", "ready", "done"}),
    "blocked": frozenset({"backlog", "ready", "done"}),
    "failed": frozenset({"backlog", "ready"}),
    "cancelled": frozenset({"backlog", "ready"}),
    "done": frozenset(),
}

Listener = Callable[[str], None]

_INSERT_EVENT = insert(events)
_INSERT_EVENT_RETURNING = insert(events).returning(events.c.id, sort_by_parameter_order=True)


@dataclass(frozen=True, slots=True)
class EventEntry:
    task: Task
    actor: str
    kind: str
    message: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    title: str
    profile: str | None = None
    body: str = ""
    priority: int = 0
    column: str = "ready"
    parents: Sequence[int] = ()
    not_before: datetime | None = None
    max_attempts: int = 3
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    statuses: Sequence[str] = ()  # stored statuses: "ready" includes released and waiting tasks
    profile: str | None = None
    limit: int = 50
    include_closed: bool = False
    created_by: str | None = None
    lanes: Sequence[str] = ()  # as `list --status` means them (core/lanes.py); wins over statuses
    newest_first: bool = False  # suggestions want recent tasks; lists go by priority


class Board(Controls, Edits, Links):
    """The board's public operations. Thread-safe; each call is its own transaction."""

    def __init__(self, db: Database, config: LanewardenConfig) -> None:
        self.db = db
        self.config = config
        self._listeners: list[Listener] = []

    # ----------------------------------------------------------------- signals

    def subscribe(self, listener: Listener) -> None:
        """``listener(topic)`` runs after a commit that may change what can be dispatched
        (topic ``dispatch``), that asks running work to stop (topic ``stop``) or that
        recorded any event (topic ``board``: what the web board follows)."""
        self._listeners.append(listener)

    def signal(self, conn: Connection, topic: str) -> None:
        """Inside a write transaction: wake this process after commit and, on PostgreSQL,
        every other process (NOTIFY is delivered at commit)."""
        pending = conn.info.setdefault("lanewarden_signals", set())
        if topic in pending:
            return  # once per transaction is enough
        if self.db.is_postgres:
            conn.execute(text("SELECT pg_notify('lanewarden', :topic)"), {"topic": topic})
        if not pending:
            from sqlalchemy import event as sa_event

            def _after_commit(c: Connection) -> None:
                topics = c.info.pop("lanewarden_signals", set())
                for t in sorted(topics):
                    self._emit(t)

            def _after_rollback(c: Connection) -> None:
                c.info.pop("lanewarden_signals", None)

            sa_event.listen(conn, "commit", _after_commit, once=True)
            sa_event.listen(conn, "rollback", _after_rollback, once=True)
        pending.add(topic)

    def _emit(self, topic: str) -> None:
        for listener in list(self._listeners):
            listener(topic)

    # ------------------------------------------------------------------ events

    def record(
        self,
        conn: Connection,
        actor: str,
        kind: str,
        message: str,
        *,
        task: Task | None = None,
        data: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Append one event (and its outbox rows); returns the event id."""
        now = now or utcnow()
        self.signal(conn, "board")  # every change is an event: the web board follows them
        event_id = conn.execute(
            insert(events)
            .values(
                task_id=task.id if task else None, at=now, actor=actor, kind=kind, message=message, data=data
            )
            .returning(events.c.id)
        ).scalar_one()
        if task is not None:
            fan_out_task_events(
                conn,
                self.config,
                [TaskNote(event_id, kind, task.id, task.origin, message, actor, task.created_by)],
                now,
            )
        return event_id

    def record_many(self, conn: Connection, entries: Sequence[EventEntry], now: datetime) -> None:
        """Append task events in one statement: the dispatcher's hot path."""
        if not entries:
            return
        self.signal(conn, "board")
        rows = [
            {
                "task_id": e.task.id,
                "at": now,
                "actor": e.actor,
                "kind": e.kind,
                "message": e.message,
                "data": e.data,
            }
            for e in entries
        ]
        channels = task_channels(conn, self.config)
        if not channels and not any(
            parse_channel(e.task.origin) or may_direct_message(e.kind, e.task.created_by) for e in entries
        ):
            conn.execute(_INSERT_EVENT, rows)  # no chat channel cares: no ids needed
            return
        ids = conn.execute(_INSERT_EVENT_RETURNING, rows).scalars().all()
        notes = [
            TaskNote(i, e.kind, e.task.id, e.task.origin, e.message, e.actor, e.task.created_by)
            for i, e in zip(ids, entries, strict=True)
        ]
        fan_out_task_events(conn, self.config, notes, now, channels)

    def audit(self, actor: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """An event that is not about one task: denied commands, caps, pauses, windows."""
        with self.db.write() as conn:
            self.record(conn, actor, kind, message, data=data)

    def notify(
        self,
        actor: str,
        topic: str,
        kind: str,
        message: str,
        data: dict[str, Any],
        *,
        outbox_kind: str | None = None,
    ) -> int:
        """An alert or digest: an event plus outbox rows for its channels; returns the row count."""
        now = utcnow()
        with self.db.write() as conn:
            event_id = self.record(conn, actor, kind, message, data=data, now=now)
            count = fan_out_notice(
                conn,
                self.config,
                topic=topic,
                kind=outbox_kind or kind,
                payload={"text": message, **data},
                now=now,
                event_id=event_id,
            )
            if count:
                self.signal(conn, "outbox")
            return count

    # ------------------------------------------------------------------- reads

    def get(self, task_id: int, conn: Connection | None = None) -> Task:
        if conn is None:
            with self.db.read() as c:
                return self.get(task_id, c)
        row = conn.execute(select_tasks().where(tasks.c.id == task_id)).first()
        if row is None:
            raise NotFound(f"no task #{task_id}")
        return Task.from_row(row)

    def find_imported(self, ref: str) -> int:
        """Our id of the task imported from Hermes as ``ref`` (its origin is ``hermes:REF``)."""
        with self.db.read() as conn:
            found = conn.execute(select(tasks.c.id).where(tasks.c.origin == f"hermes:{ref}")).scalars().all()
        if not found:
            raise NotFound(f"no task imported from Hermes as {ref}")
        return found[0]

    def list_tasks(self, flt: TaskFilter) -> list[Task]:
        return self.list_page(flt)[0]

    def list_page(self, flt: TaskFilter) -> tuple[list[Task], bool]:
        """Tasks by priority, then age; and whether ``limit`` cut the list (limit 0: all)."""
        if not 0 <= flt.limit <= LIST_LIMIT_MAX:
            raise UsageError(f"--limit must be between 1 and {LIST_LIMIT_MAX} (0 for all), got {flt.limit}")
        now = utcnow()
        query = select_tasks()
        if flt.lanes:
            query = query.where(or_(*(lane_condition(lane, now) for lane in flt.lanes)))
        elif flt.statuses:
            query = query.where(tasks.c.status.in_(list(flt.statuses)))
        elif not flt.include_closed:
            query = query.where(tasks.c.status.in_(OPEN_STATUSES))
        if flt.profile:
            query = query.where(tasks.c.profile == flt.profile)
        if flt.created_by:
            query = query.where(tasks.c.created_by == flt.created_by)
        if flt.newest_first:
            query = query.order_by(tasks.c.id.desc())
        else:  # the claim index (status, profile, priority desc, id) serves this order
            query = query.order_by(tasks.c.priority.desc(), tasks.c.id)
        if flt.limit:
            query = query.limit(flt.limit + 1)  # one more tells whether the list was cut
        with self.db.read() as conn:
            found = [Task.from_row(r) for r in conn.execute(query)]
        if flt.limit and len(found) > flt.limit:
            return found[: flt.limit], True
        return found, False

    def counts(self, conn: Connection | None = None) -> dict[str, int]:
        if conn is None:
            with self.db.read() as c:
                return self.counts(c)
        rows = conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))
        found = dict(rows.all())
        return {status: int(found.get(status, 0)) for status in TASK_STATUSES}

    def show(self, task_id: int, *, history: int = 20) -> TaskDetail:
        with self.db.read() as conn:
            return task_detail(conn, self.config, self.get(task_id, conn), history=history)

    # ------------------------------------------------------------------ writes

    def add(self, new: NewTask, actor: str) -> Task:
        title = clean_title(new.title)
        clean_body(new.body)
        if new.column not in ("backlog", "ready"):
            raise UsageError(f"a new task goes to backlog or ready, not {new.column!r}")
        check_range("priority", new.priority, PRIORITY_RANGE)
        check_range("max-attempts", new.max_attempts, MAX_ATTEMPTS_RANGE)
        profile = new.profile or self.config.default_profile
        self.require_profile(profile)
        parents = list(dict.fromkeys(new.parents))
        now = utcnow()
        with self.db.write() as conn:
            if parents:
                found = set(conn.execute(select(tasks.c.id).where(tasks.c.id.in_(parents))).scalars())
                missing = [p for p in parents if p not in found]
                if missing:
                    raise NotFound("no task " + ", ".join(f"#{m}" for m in missing))
            task_id = conn.execute(
                insert(tasks)
                .values(
                    title=title,
                    body=new.body,
                    profile=profile,
                    priority=new.priority,
                    status=new.column,
                    released=False,
                    attempts=0,
                    max_attempts=new.max_attempts,
                    not_before=new.not_before,
                    created_by=actor,
                    origin=new.origin,
                    created_at=now,
                    updated_at=now,
                )
                .returning(tasks.c.id)
            ).scalar_one()
            if parents:
                conn.execute(
                    insert(task_links),
                    [{"parent_id": p, "child_id": task_id, "created_at": now} for p in parents],
                )
            task = self.get(task_id, conn)
            parent_refs = " after " + ", ".join(f"#{p}" for p in parents) if parents else ""
            self.record(
                conn,
                actor,
                "created",
                f"created in {new.column}{parent_refs}",
                task=task,
                data={"parents": parents} if parents else None,
                now=now,
            )
            if new.column == "ready":
                self.signal(conn, "dispatch")
            return task

    def promote(self, task_id: int, column: str, actor: str) -> Task:
        if column not in ("ready", "active"):
            raise UsageError(f"promote moves a task forward to ready or active, not {column!r} (see move)")
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            return self._promote(conn, task, column, actor)

    def _promote(self, conn: Connection, task: Task, column: str, actor: str) -> Task:
        if column == "ready":
            if task.status != Status.BACKLOG:
                raise Conflict(f"{task.ref} is {task.lane}; only a backlog task can be promoted to ready")
            return self._transition(conn, task, actor, "promoted", "promoted to ready", status=Status.READY)
        if task.status == Status.ACTIVE or (task.status == Status.READY and task.released):
            return task  # already on its way: releasing again is a no-op, so cron wrappers can repeat
        if task.status not in (Status.BACKLOG, Status.READY):
            raise Conflict(f"{task.ref} is {task.lane}; only backlog or ready tasks can be released")
        pending = self._unfinished_parents(conn, task.id)
        if pending:
            listed = ", ".join(f"#{pid} ({status})" for pid, status in pending)
            raise Conflict(f"{task.ref} cannot start before its parents are done: {listed}")
        if task.not_before is not None and task.not_before > utcnow():
            raise Conflict(
                f"{task.ref} may not start before {task.not_before.isoformat(timespec='seconds')}; "
                "it is listed as ready from then"
            )
        return self._transition(
            conn,
            task,
            actor,
            "released",
            "released to start when a slot is free",
            status=Status.READY,
            released=True,
        )

    def promote_batch(
        self, from_column: str, to_column: str, max_count: int, actor: str, profile: str | None = None
    ) -> list[Task]:
        check_batch(from_column, to_column, max_count)
        if profile is not None:
            self.require_profile(profile)
        query = select(tasks).where(tasks.c.status == from_column)
        if to_column == "active":
            # exactly what `promote --column active` accepts, as `list --column ready` shows
            query = query.where(tasks.c.released.is_(False), ~parents_pending(), ~not_yet(utcnow()))
        if profile is not None:
            query = query.where(tasks.c.profile == profile)
        query = query.order_by(tasks.c.priority.desc(), tasks.c.id).limit(max_count)
        if self.db.is_postgres:
            query = query.with_for_update(skip_locked=True, of=tasks)
        promoted: list[Task] = []
        with self.db.write() as conn:
            for row in conn.execute(query).all():
                promoted.append(self._promote(conn, Task.from_row(row), to_column, actor))
        return promoted

    def move(self, task_id: int, column: str, actor: str) -> Task:
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            allowed = MOVES.get(task.status, frozenset())
            if column not in allowed:
                hint = ", ".join(sorted(allowed)) or "nothing: it is final"
                raise Conflict(f"{task.ref} is {task.lane}; it can move to {hint}")
            if column == "done":
                return self._transition(
                    conn,
                    task,
                    actor,
                    "moved",
                    "moved to done by hand",
                    status=Status.DONE,
                    released=False,
                    finished_at=utcnow(),
                )
            if task.status in (Status.FAILED, Status.CANCELLED):
                return self._transition(
                    conn,
                    task,
                    actor,
                    "moved",
                    f"moved to {column}",
                    status=column,
                    released=False,
                    attempts=0,
                    error=None,
                    not_before=None,
                )
            return self._transition(
                conn, task, actor, "moved", f"moved to {column}", status=column, released=False
            )

    def block(self, task_id: int, actor: str, reason: str = "") -> Task:
        check_length("reason", reason, COMMENT_MAX)
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            if task.status not in (Status.BACKLOG, Status.READY, Status.ACTIVE):
                raise Conflict(
                    f"{task.ref} is {task.lane}; only backlog, ready or active tasks can be blocked"
                )
            came_from = "ready" if task.status == Status.ACTIVE else task.status
            message = "blocked" + (f": {reason}" if reason else "")
            return self._transition(
                conn,
                task,
                actor,
                "blocked",
                message,
                status=Status.BLOCKED,
                blocked_from=came_from,
                released=False,
            )

    def unblock(self, task_id: int, actor: str) -> Task:
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            if task.status != Status.BLOCKED:
                raise Conflict(f"{task.ref} is {task.lane}, not blocked")
            back = task.blocked_from or "ready"
            return self._transition(
                conn, task, actor, "unblocked", f"unblocked back to {back}", status=back, blocked_from=None
            )

    def cancel(self, task_id: int, actor: str, reason: str = "") -> Task:
        check_length("reason", reason, COMMENT_MAX)
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            if task.status in (Status.DONE, Status.CANCELLED):
                raise Conflict(f"{task.ref} is already {task.status}")
            message = "cancelled" + (f": {reason}" if reason else "")
            return self._transition(
                conn,
                task,
                actor,
                "cancelled",
                message,
                status=Status.CANCELLED,
                released=False,
                finished_at=utcnow(),
            )

    def retry(self, task_id: int, actor: str) -> Task:
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            if task.status not in (Status.FAILED, Status.CANCELLED):
                raise Conflict(f"{task.ref} is {task.lane}; only failed or cancelled tasks can be retried")
            return self._transition(
                conn,
                task,
                actor,
                "retried",
                "sent back to ready for a new try",
                status=Status.READY,
                attempts=0,
                error=None,
                not_before=None,
                released=False,
                finished_at=None,
            )

    def comment(self, task_id: int, body: str, actor: str) -> Event:
        body = body.strip()
        if not body:
            raise UsageError("a comment needs some text")
        check_length("comment", body, COMMENT_MAX)
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            event_id = self.record(conn, actor, "commented", body, task=task)
            row = conn.execute(select(events).where(events.c.id == event_id)).one()
            return Event.from_row(row)

    # ---------------------------------------------------------------- helpers

    def _lock(self, conn: Connection, task_id: int) -> Task:
        query = select(tasks).where(tasks.c.id == task_id)
        if self.db.is_postgres:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no task #{task_id}")
        return Task.from_row(row)

    def _transition(
        self, conn: Connection, task: Task, actor: str, kind: str, message: str, **values: Any
    ) -> Task:
        """Change a task, stop its run if it leaves ``active``, record the event."""
        now = utcnow()
        values["updated_at"] = now
        conn.execute(update(tasks).where(tasks.c.id == task.id).values(**values))
        if task.status == Status.ACTIVE and values.get("status", "active") != "active":
            # the run keeps its slot until its worker has really stopped (or its lease expires)
            conn.execute(
                update(runs)
                .where(runs.c.id == task.current_run_id, runs.c.finished_at.is_(None))
                .values(stop_requested=kind)
            )
            self.signal(conn, "stop")
        new = self.get(task.id, conn)
        self.record(conn, actor, kind, message, task=new, now=now)
        if new.status == Status.READY or (task.status == Status.ACTIVE):
            self.signal(conn, "dispatch")
        if new.status == Status.DONE:
            self.signal(conn, "dispatch")  # children may be dispatchable now
        return new

    def _unfinished_parents(self, conn: Connection, task_id: int) -> list[tuple[int, str]]:
        rows = conn.execute(
            select(tasks.c.id, tasks.c.status)
            .join(task_links, task_links.c.parent_id == tasks.c.id)
            .where(task_links.c.child_id == task_id, tasks.c.status != Status.DONE)
            .order_by(tasks.c.id)
        )
        return [(r.id, r.status) for r in rows]


def check_batch(from_column: str, to_column: str, max_count: int) -> None:
    """What promote-batch refuses before reading any task (windows check it when added)."""
    order = ("backlog", "ready", "active")
    if from_column not in ("backlog", "ready") or to_column not in ("ready", "active"):
        raise UsageError("promote-batch goes --from backlog|ready --to ready|active")
    if order.index(to_column) <= order.index(from_column):
        raise UsageError(f"--to {to_column} is not ahead of --from {from_column}")
    check_range("max", max_count, (1, PROMOTE_BATCH_MAX))


def open_board(config: LanewardenConfig, *, migrate: bool = True) -> Board:
    """Connect to ``board.url`` and bring its schema up to date (one SELECT when current)."""
    db = Database(config.board.url)
    if migrate:
        ensure_schema(db)
    return Board(db, config)
