"""What a command returns: structured data that every front end renders its own way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lanewarden.core.grammar import Command
from lanewarden.core.run_output import RunLog
from lanewarden.core.status import StatusReport
from lanewarden.core.tasks import Task, TaskDetail
from lanewarden.core.tune import Advice
from lanewarden.core.windows import Window


@dataclass(frozen=True)
class Result:
    command: Command

    @property
    def verb(self) -> str:
        return self.command.VERB.name

    def to_json(self) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class TaskChanged(Result):
    """add, promote, move, block, unblock, cancel, retry."""

    task: Task
    message: str

    def to_json(self) -> Any:
        return {"task": self.task.to_json(), "message": self.message}


@dataclass(frozen=True)
class TaskList(Result):
    tasks: list[Task]
    cut: bool = False  # the limit left some out (`--limit 0` lists all)

    def to_json(self) -> Any:
        return [t.to_json() for t in self.tasks]


@dataclass(frozen=True)
class LogsShown(Result):
    task: Task
    logs: list[RunLog]
    # chat and the web get the tail of each run; the CLI and console get all that is kept
    bounded: bool = False

    def to_json(self) -> Any:
        return {"task": self.task.to_json(), "runs": [log.to_json() for log in self.logs]}


@dataclass(frozen=True)
class TaskShown(Result):
    detail: TaskDetail

    def to_json(self) -> Any:
        return self.detail.to_json()


@dataclass(frozen=True)
class BatchPromoted(Result):
    tasks: list[Task]
    from_column: str
    to_column: str

    def to_json(self) -> Any:
        return {"from": self.from_column, "to": self.to_column, "tasks": [t.to_json() for t in self.tasks]}


@dataclass(frozen=True)
class CapsShown(Result):
    caps: dict[str, Any]

    def to_json(self) -> Any:
        return self.caps


@dataclass(frozen=True)
class StatusShown(Result):
    report: StatusReport
    chart: bool = False
    chart_window: timedelta = timedelta(hours=1)

    def to_json(self) -> Any:
        return self.report.to_json()


@dataclass(frozen=True)
class WindowsShown(Result):
    windows: list[Window]

    def to_json(self) -> Any:
        return [w.to_json() for w in self.windows]


@dataclass(frozen=True)
class Done(Result):
    """A plain acknowledgement: link, unlink, comment, caps set, pause, subscribe, ..."""

    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Any:
        return {"message": self.message, **self.data}


@dataclass(frozen=True)
class HelpShown(Result):
    text: str

    def to_json(self) -> Any:
        return {"help": self.text}


@dataclass(frozen=True)
class DigestShown(Result):
    text: str
    data: dict[str, Any]

    def to_json(self) -> Any:
        return {"text": self.text, **self.data}


@dataclass(frozen=True)
class TuneShown(Result):
    advice: list[Advice]
    applied: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> Any:
        return {
            "advice": [a.to_json() for a in self.advice],
            "applied": [{"gateway": g, "cap": cap} for g, cap in self.applied],
        }


@dataclass(frozen=True)
class WebLinkShown(Result):
    """A sign-in link: for the person who asked only (front ends answer privately)."""

    url: str
    actor_id: str
    role: str
    expires_at: datetime
    minutes: int

    def to_json(self) -> Any:
        return {
            "url": self.url,
            "actor": self.actor_id,
            "role": self.role,
            "expires_at": self.expires_at.isoformat(),
        }
