"""Runners do the work of one run: an LLM call, an agent command line, or nothing.

A runner returns ``RunOutput`` or raises one of the exceptions below, which the
dispatcher maps to run outcomes. Timeouts and stop requests reach a runner as
cancellation; a runner must then abort its HTTP call or kill its process group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lanewarden.core.claims import Claim
from lanewarden.core.config import GatewayConfig, ProfileConfig, lanewarden_home
from lanewarden.core.workspaces import run_directory


@dataclass(frozen=True, slots=True)
class Job:
    claim: Claim
    profile_name: str
    profile: ProfileConfig
    gateway: GatewayConfig | None
    parents: list[tuple[int, str, str]] = field(default_factory=list)
    workspace_root: Path | None = None  # this board's directory of run workspaces
    # called with the pid of an agent process as soon as it runs (recorded on the run row)
    on_process: Callable[[int], Awaitable[None]] | None = None
    # called with output as it comes (stdout/stderr, the streamed answer): `logs` reads it
    on_output: Callable[[str], None] | None = None

    def output(self, text: str) -> None:
        if self.on_output is not None:
            self.on_output(text)

    @property
    def workspace(self) -> Path:
        """The run's own working directory (core/workspaces.py)."""
        root = self.workspace_root or lanewarden_home() / "workspaces"
        return run_directory(root, self.claim.task.id, self.claim.run_id)

    def prompt(self) -> str:
        """The task as the agent sees it: title, body, and its parents' results."""
        task = self.claim.task
        parts = [task.title]
        if task.body:
            parts.append(task.body)
        if self.parents:
            parts.append("Results of the tasks this one depends on:")
            for pid, title, result in self.parents:
                parts.append(f"--- #{pid} {title} ---\n{result}")
        return "\n\n".join(parts)


@dataclass(frozen=True, slots=True)
class RunOutput:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None


class TaskFailed(Exception):
    """The task itself failed: counts against max_attempts."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class GatewayDown(Exception):
    """The gateway could not be reached: the task waits, no attempt is used."""


class GatewayBusy(Exception):
    """429/503 from the gateway: backpressure, not a task failure."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Runner(Protocol):
    async def run(self, job: Job) -> RunOutput: ...

    async def aclose(self) -> None: ...
