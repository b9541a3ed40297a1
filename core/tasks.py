"""The board's value types: what a task, run and event look like outside the database."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lanewarden.core.clock import utcnow
from lanewarden.core.statuses import Status
from sqlalchemy import Row

# what a ready task is shown as: startable now, released and waiting for a slot, or waiting
# on a parent or its not_before (see core/lanes.py for the queries that pick them)
READY_LANES = ("ready", "released", "waiting")


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    title: str
    body: str
    profile: str
    priority: int
    status: str
    released: bool
    attempts: int
    max_attempts: int
    not_before: datetime | None
    created_by: str
    origin: str | None
    result: str | None
    error: str | None
    current_run_id: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    blocked_from: str | None = None
    # set by reads that select ``parents_pending`` with the task (core/lanes.py); False otherwise
    parents_pending: bool = False

    @property
    def ref(self) -> str:
        return f"#{self.id}"

    @property
    def lane(self) -> str:
        """The status as shown to people. A ready task is ``released`` once promoted to
        active and waiting for a slot, ``waiting`` while a parent is not done or its
        not_before has not passed, and ``ready`` only when a release would accept it."""
        if self.status != Status.READY:
            return self.status
        if self.released:
            return "released"
        if self.parents_pending or (self.not_before is not None and self.not_before > utcnow()):
            return "waiting"
        return "ready"

    @classmethod
    def from_row(cls, row: Row[Any]) -> Task:
        m = row._mapping
        values = {name: m[name] for name in _TASK_FIELDS if name != "parents_pending"}
        return cls(**values, parents_pending=bool(m.get("parents_pending", False)))

    def to_json(self) -> dict[str, Any]:
        return {**_jsonable(asdict(self)), "lane": self.lane}


_TASK_FIELDS = tuple(Task.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    task_id: int
    attempt: int
    dispatcher: str
    profile: str
    gateway: str | None
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime
    outcome: str | None
    latency_ms: float | None
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Run:
        m = row._mapping
        return cls(**{name: m[name] for name in _RUN_FIELDS})

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


_RUN_FIELDS = tuple(Run.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    task_id: int | None
    at: datetime
    actor: str
    kind: str
    message: str
    data: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> Event:
        m = row._mapping
        return cls(**{name: m[name] for name in _EVENT_FIELDS})

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


_EVENT_FIELDS = tuple(Event.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class TaskDetail:
    task: Task
    parents: list[Task]
    children: list[Task]
    runs: list[Run]
    events: list[Event]
    # why the dispatcher will not start it now; empty when it is dispatchable or finished
    waiting_on: list[str] = field(default_factory=list)
    # the runner of each profile its runs used ("command", "llm"): where a run without a
    # gateway ran
    runners: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "runners": dict(self.runners),
            "task": self.task.to_json(),
            "parents": [p.to_json() for p in self.parents],
            "children": [c.to_json() for c in self.children],
            "runs": [r.to_json() for r in self.runs],
            "events": [e.to_json() for e in self.events],
            "waiting_on": list(self.waiting_on),
        }


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}
