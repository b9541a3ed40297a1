"""Changing tasks after the fact: ``edit``, selections for bulk commands, and ``purge``.

A mixin of ``Board`` (core/board.py), like the caps and pauses in core/controls.py. The
checks on a task's text and numbers live here and serve ``add`` as well, so an edit
can never store what ``add`` would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lanewarden.core.clock import utcnow
from lanewarden.core.errors import Conflict, UsageError
from lanewarden.core.schema import BODY_MAX, TITLE_MAX, events, outbox, runs, task_links, tasks
from lanewarden.core.statuses import TASK_STATUSES, Status
from lanewarden.core.tasks import Task
from lanewarden.core.text import check_text
from sqlalchemy import Connection, delete, select

if TYPE_CHECKING:
    from lanewarden.core.config import LanewardenConfig
    from lanewarden.core.db import Database

PRIORITY_RANGE = (-1_000_000, 1_000_000)
MAX_ATTEMPTS_RANGE = (1, 100)
BULK_MAX = 1000
# what a running task's worker has already read: changing it under the agent would lie
FROZEN_WHILE_ACTIVE = ("title", "body", "profile")
# finished tasks that purge may delete
PURGEABLE = (Status.DONE, Status.CANCELLED)


def clean_title(raw: str) -> str:
    title = " ".join(check_text("title", raw).split())
    if not title:
        raise UsageError("a task needs a title")
    check_length("title", title, TITLE_MAX)
    return title


def clean_body(raw: str) -> str:
    check_length("body", raw, BODY_MAX)
    return raw


def check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}, got {value}")


def check_length(name: str, value: str, limit: int) -> None:
    check_text(name, value)
    if len(value) > limit:
        raise UsageError(f"{name} is {len(value)} characters; the limit is {limit}")


class Edits:
    """``edit``, the selection behind bulk ``cancel``/``retry``/``block``, and ``purge``."""

    db: Database
    config: LanewardenConfig

    if TYPE_CHECKING:  # provided by Board

        def _lock(self, conn: Connection, task_id: int) -> Task: ...

        def _transition(
            self, conn: Connection, task: Task, actor: str, kind: str, message: str, **values: Any
        ) -> Task: ...

        def require_profile(self, profile: str) -> None: ...

        def audit(self, actor: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None: ...

    def edit(
        self,
        task_id: int,
        actor: str,
        *,
        title: str | None = None,
        body: str | None = None,
        priority: int | None = None,
        profile: str | None = None,
    ) -> Task:
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = clean_title(title)
        if body is not None:
            values["body"] = clean_body(body)
        if priority is not None:
            check_range("priority", priority, PRIORITY_RANGE)
            values["priority"] = priority
        if profile is not None:
            self.require_profile(profile)
            values["profile"] = profile
        if not values:
            raise UsageError("say what to change: --title, --body, --priority or --profile")
        with self.db.write() as conn:
            task = self._lock(conn, task_id)
            frozen = [key for key in FROZEN_WHILE_ACTIVE if key in values]
            if task.status == Status.ACTIVE and frozen:
                raise Conflict(
                    f"{task.ref} is running: its {' and '.join(frozen)} cannot change under it "
                    f"(move {task.id} ready stops it first); --priority can"
                )
            changed = {k: v for k, v in values.items() if getattr(task, k) != v}
            if not changed:
                return task
            described = ", ".join(
                f"priority {task.priority} -> {v}" if k == "priority" else f"{k} changed"
                for k, v in changed.items()
            )
            return self._transition(conn, task, actor, "edited", f"edited: {described}", **changed)

    def select_ids(self, statuses: Sequence[str], profile: str | None) -> list[int]:
        """The tasks a bulk command would touch, oldest first, at most ``BULK_MAX``."""
        bad = [s for s in statuses if s not in TASK_STATUSES]
        if bad or not statuses:
            raise UsageError(f"--status must be among {', '.join(TASK_STATUSES)} for a bulk change")
        if profile:
            self.require_profile(profile)
        query = select(tasks.c.id).where(tasks.c.status.in_(list(statuses)))
        if profile:
            query = query.where(tasks.c.profile == profile)
        with self.db.read() as conn:
            ids = list(conn.execute(query.order_by(tasks.c.id).limit(BULK_MAX + 1)).scalars())
        if len(ids) > BULK_MAX:
            raise UsageError(f"more than {BULK_MAX} tasks match: narrow it with --profile")
        return ids

    def purge(self, older_than: timedelta, actor: str, *, apply: bool) -> list[int]:
        """Delete done and cancelled tasks finished more than ``older_than`` ago, with their
        runs, events and links; tasks that are a parent of an unfinished task stay."""
        if older_than < timedelta(days=1):
            raise UsageError("purge keeps at least a day of history: --older-than 1d or more")
        cutoff = utcnow() - older_than
        child = tasks.alias("child")
        still_needed = (
            select(task_links.c.parent_id)
            .join(child, child.c.id == task_links.c.child_id)
            .where(child.c.status.not_in(list(PURGEABLE)))
        )
        query = (
            select(tasks.c.id)
            .where(
                tasks.c.status.in_(list(PURGEABLE)),
                tasks.c.finished_at < cutoff,
                tasks.c.id.not_in(still_needed),
            )
            .order_by(tasks.c.id)
        )
        with self.db.write() as conn:
            ids = list(conn.execute(query).scalars())
            if apply and ids:
                for table, column in (
                    (outbox, outbox.c.task_id),
                    (events, events.c.task_id),
                    (runs, runs.c.task_id),
                    (task_links, task_links.c.parent_id),
                    (task_links, task_links.c.child_id),
                ):
                    conn.execute(delete(table).where(column.in_(ids)))
                conn.execute(delete(tasks).where(tasks.c.id.in_(ids)))
        if apply and ids:
            self.audit(actor, "purged", f"purged {len(ids)} finished task(s)", {"ids": ids})
        return ids
