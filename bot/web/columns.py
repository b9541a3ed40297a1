"""The board as columns: which column a task is in, and one page of each column.

The columns split ``ready`` the way people triage it: tasks a release would accept
(ready), tasks released and waiting for a slot, and tasks waiting on their parents or
on a start time. Every column is paged, so 10,000 ready tasks cost one page of cards
plus one count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.lanes import lane_condition
from lanewarden.core.schema import tasks
from lanewarden.core.tasks import Task
from lanewarden.core.windows import host_timezone
from sqlalchemy import ColumnElement, Connection, and_, case, false, func, literal, or_, select

SORT_SPAN = 10**7  # priorities are within +-1,000,000: shifted, they sort as fixed-width text


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    hint: str
    # where a task must be to sit in this column (``now`` and the start of today given)
    where: Callable[[datetime, datetime], ColumnElement[bool]]
    order: Sequence[Any]
    by_priority: bool = True


def _lane(name: str) -> Callable[[datetime, datetime], ColumnElement[bool]]:
    """One of ``list``'s lanes (core/lanes.py is the one definition)."""
    return lambda now, today: lane_condition(name, now)


_BY_PRIORITY = (tasks.c.priority.desc(), tasks.c.id)
_RECENT_FIRST = (tasks.c.updated_at.desc(), tasks.c.id.desc())

COLUMNS: tuple[Column, ...] = (
    Column(
        "backlog",
        "Backlog",
        "not ready to run yet",
        _lane("backlog"),
        _BY_PRIORITY,
    ),
    Column("ready", "Ready", "what a release would start", _lane("ready"), _BY_PRIORITY),
    Column("waiting", "Waiting", "on parents or a start time", _lane("waiting"), _BY_PRIORITY),
    Column(
        "released",
        "Released",
        "waiting for a free slot",
        _lane("released"),
        _BY_PRIORITY,
    ),
    Column(
        "active",
        "Active",
        "running now",
        _lane("active"),
        (tasks.c.started_at, tasks.c.id),
        by_priority=False,
    ),
    Column(
        "blocked",
        "Blocked",
        "held by someone",
        _lane("blocked"),
        _RECENT_FIRST,
        by_priority=False,
    ),
    Column(
        "failed",
        "Failed",
        "out of attempts",
        _lane("failed"),
        _RECENT_FIRST,
        by_priority=False,
    ),
    Column(
        "done",
        "Done today",
        "finished since midnight",
        lambda now, today: and_(lane_condition("done", now), tasks.c.finished_at >= today),
        (tasks.c.finished_at.desc(), tasks.c.id.desc()),
        by_priority=False,
    ),
)
BY_KEY = {c.key: c for c in COLUMNS}


@dataclass(frozen=True, slots=True)
class Filters:
    profile: str | None = None
    gateway: str | None = None
    query: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.profile or self.gateway or self.query)

    def clause(self, config: LanewardenConfig) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        if self.profile:
            parts.append(tasks.c.profile == self.profile)
        if self.gateway:
            profiles = [n for n, p in config.profiles.items() if p.gateway == self.gateway]
            parts.append(tasks.c.profile.in_(profiles) if profiles else false())
        if self.query:
            text = self.query.strip().lstrip("#")
            title = tasks.c.title.ilike(f"%{_escape_like(text)}%", escape="\\")
            parts.append(or_(title, tasks.c.id == int(text)) if text.isdigit() else title)
        return and_(literal(True), *parts)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class Card:
    """A task as a card: what the board shows and where the live page places it."""

    task: Task
    column: str | None  # None: on no column (cancelled, or done before today)
    gateway: str | None

    @property
    def sort_key(self) -> str:
        """Compares as text in the column's order, so the page can place a live card."""
        t = self.task
        column = BY_KEY.get(self.column or "")
        if column is None or column.by_priority:
            return f"{SORT_SPAN // 2 - t.priority:08d}{t.id:012d}"
        stamp = {
            "active": t.started_at,
            "done": t.finished_at,
        }.get(column.key, t.updated_at) or t.updated_at
        micros = int(stamp.timestamp() * 1_000_000)
        if column.key == "active":
            return f"{micros:020d}{t.id:012d}"
        return f"{10**19 - micros:020d}{10**12 - t.id:012d}"


@dataclass(frozen=True, slots=True)
class ColumnPage:
    column: Column
    cards: list[Card]
    total: int
    offset: int

    @property
    def more(self) -> int:
        return max(0, self.total - self.offset - len(self.cards))


@dataclass(frozen=True, slots=True)
class BoardView:
    columns: list[ColumnPage]
    filters: Filters
    at: datetime = field(default_factory=utcnow)


def start_of_today(now: datetime, tz: ZoneInfo | None = None) -> datetime:
    """Midnight in the host's timezone (windows use it too), as a UTC instant."""
    zone = tz or ZoneInfo(host_timezone())
    local = now.astimezone(zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def gateway_of(config: LanewardenConfig, profile: str) -> str | None:
    found = config.profiles.get(profile)
    return found.gateway if found is not None else None


def load_board(
    conn: Connection,
    config: LanewardenConfig,
    filters: Filters,
    *,
    page_size: int,
    only: str | None = None,
    offset: int = 0,
) -> BoardView:
    """One page of every column (or of ``only``), with each column's total."""
    now = utcnow()
    today = start_of_today(now)
    matching = filters.clause(config)
    if only is None:
        # every column's count in one pass over the tasks (eight counts cost eight passes)
        key = column_key_expression(now, today)
        totals = {
            k: int(n)
            for k, n in conn.execute(
                select(key, func.count()).where(matching, key.is_not(None)).group_by(key)
            )
        }
    pages = []
    for column in COLUMNS:
        if only is not None and column.key != only:
            continue
        where = and_(column.where(now, today), matching)
        if only is None:
            total = totals.get(column.key, 0)
        else:
            total = conn.execute(select(func.count()).select_from(tasks).where(where)).scalar_one()
        rows = conn.execute(
            select(tasks).where(where).order_by(*column.order).offset(offset).limit(page_size)
        ).all()
        cards = [Card(Task.from_row(r), column.key, gateway_of(config, r.profile)) for r in rows]
        pages.append(ColumnPage(column, cards, int(total), offset))
    return BoardView(pages, filters, now)


def column_counts(conn: Connection, config: LanewardenConfig) -> dict[str, int]:
    """Every column's size in one statement (what the live page shows in its headers)."""
    now = utcnow()
    key = column_key_expression(now, start_of_today(now))
    rows = conn.execute(select(key, func.count()).where(key.is_not(None)).group_by(key)).all()
    found = {k: int(n) for k, n in rows}
    return {c.key: found.get(c.key, 0) for c in COLUMNS}


def column_key_expression(now: datetime, today: datetime) -> ColumnElement[Any]:
    """The column of the current ``tasks`` row as SQL; NULL when it is on none."""
    return case(*[(c.where(now, today), c.key) for c in COLUMNS], else_=None)


def load_cards(conn: Connection, config: LanewardenConfig, task_ids: Iterable[int]) -> list[Card]:
    """The given tasks as cards in their current column (what the live stream sends)."""
    ids = sorted(set(task_ids))
    if not ids:
        return []
    now = utcnow()
    key = column_key_expression(now, start_of_today(now)).label("column_key")
    rows = conn.execute(select(tasks, key).where(tasks.c.id.in_(ids))).all()
    return [Card(Task.from_row(r), r.column_key, gateway_of(config, r.profile)) for r in rows]
