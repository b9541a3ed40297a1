"""The lanes people see, as queries: a task's status, with ``ready`` split three ways.

A ready task is listed as ``ready`` only when a release (``promote --column active``)
would accept it: parents done, ``not_before`` passed, not yet released. Released tasks
waiting for a slot are ``released``; the rest are ``waiting`` (on a parent, or on their
``not_before``, such as a retry's backoff). The guide's cron wrapper releases exactly
what ``list --column ready`` prints, so these definitions and ``Board.promote`` agree.
"""

from __future__ import annotations

from datetime import datetime

from lanewarden.core.schema import task_links, tasks
from lanewarden.core.statuses import TASK_STATUSES, Status
from sqlalchemy import ColumnElement, Exists, Select, and_, exists, false, or_, select

# what `list --status` accepts, in board order
LANES = ("backlog", "ready", "released", "waiting", "active", "done", "failed", "blocked", "cancelled")


# Hermes' statuses in `list --status`: the one that maps one-to-one is accepted, the others
# are answered with our form (docs/hermes.md)
HERMES_LANES = {"running": "active"}
HERMES_NO_LANE = {
    "todo": "backlog, or waiting when it has parents",
    "triage": "backlog",
    "scheduled": "backlog (or a --not-before time: waiting)",
    "review": "blocked, after an import",
    "archived": "done or cancelled (list --all)",
}


def parents_pending() -> Exists:
    """Correlated to ``tasks``: true while some parent of the task is not done."""
    parent = tasks.alias("parent")
    return exists(
        select(task_links.c.parent_id)
        .join(parent, parent.c.id == task_links.c.parent_id)
        .where(task_links.c.child_id == tasks.c.id, parent.c.status != Status.DONE)
    )


def not_yet(now: datetime) -> ColumnElement[bool]:
    """The task's not_before is still ahead."""
    return and_(tasks.c.not_before.is_not(None), tasks.c.not_before > now)


def lane_condition(lane: str, now: datetime) -> ColumnElement[bool]:
    """The WHERE clause for one lane of ``LANES``."""
    if lane == "ready":
        return and_(
            tasks.c.status == Status.READY, tasks.c.released.is_(False), ~parents_pending(), ~not_yet(now)
        )
    if lane == "released":
        return and_(tasks.c.status == Status.READY, tasks.c.released.is_(True))
    if lane == "waiting":
        return and_(
            tasks.c.status == Status.READY, tasks.c.released.is_(False), or_(parents_pending(), not_yet(now))
        )
    if lane in TASK_STATUSES:
        return tasks.c.status == lane
    return false()


def select_tasks() -> Select:
    """Every task column plus ``parents_pending``, so that ``Task.lane`` can tell ``waiting``."""
    return select(tasks, parents_pending().label("parents_pending"))
