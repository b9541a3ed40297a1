"""Task statuses and run outcomes: the one place they are named and grouped.

``Status`` and ``Outcome`` are ``StrEnum``s, so a member is its own database value
(``Status.READY == "ready"``); the schema's CHECK constraints, the grammar's choices
and every grouping below are built from these, never from copied literals.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    BACKLOG = "backlog"
    READY = "ready"
    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # task finished
    FAILED = "failed"  # task error: burns an attempt
    TIMED_OUT = "timed_out"  # task error: burns an attempt
    CANCELLED = "cancelled"  # stopped by cancel/block/move
    LOST = "lost"  # lease expired (dispatcher crashed): infrastructure
    RELEASED = "released"  # drained on shutdown: infrastructure
    GATEWAY_DOWN = "gateway_down"  # could not reach the gateway: infrastructure
    BACKPRESSURE = "backpressure"  # 429/503 from the gateway: infrastructure


TASK_STATUSES: tuple[str, ...] = tuple(Status)
RUN_OUTCOMES: tuple[str, ...] = tuple(Outcome)
# statuses a task can still leave by itself or by a person's hand
OPEN_STATUSES: tuple[str, ...] = (Status.BACKLOG, Status.READY, Status.ACTIVE, Status.BLOCKED, Status.FAILED)
# outcomes that are the infrastructure's fault: they never burn one of the task's attempts
INFRASTRUCTURE_OUTCOMES: tuple[str, ...] = (
    Outcome.LOST,
    Outcome.RELEASED,
    Outcome.GATEWAY_DOWN,
    Outcome.BACKPRESSURE,
)
# outcomes of task errors: they burn an attempt
TASK_ERROR_OUTCOMES: tuple[str, ...] = (Outcome.FAILED, Outcome.TIMED_OUT)
# requests that reached a verdict at the gateway: the denominator of error and timeout rates
GATEWAY_VERDICTS: tuple[str, ...] = (
    Outcome.SUCCEEDED,
    Outcome.FAILED,
    Outcome.TIMED_OUT,
    Outcome.BACKPRESSURE,
    Outcome.GATEWAY_DOWN,
)
# of those, the ones counted as errors (timeouts are counted on their own)
GATEWAY_ERRORS: tuple[str, ...] = (Outcome.FAILED, Outcome.BACKPRESSURE, Outcome.GATEWAY_DOWN)
