"""The read model: every figure an operator sees, defined once.

``status``, ``/metrics``, ``doctor``, the alert rules and the status chart all read the
board through these functions, so a "live process", "the oldest waiting task" or "the
error rate" means the same thing in each of them. Each function takes an open read
connection (one short transaction for a whole report) and ``now``, so a report is
computed at one instant.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lanewarden.core.board import parents_pending
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.nodes import NodeReading, NodeView, reading_from_row
from lanewarden.core.schema import (
    dispatchers,
    events,
    gateway_limit_history,
    gateway_state,
    node_readings,
    outbox,
    runs,
    tasks,
)
from lanewarden.core.statuses import GATEWAY_ERRORS, GATEWAY_VERDICTS, TASK_STATUSES, Outcome, Status
from sqlalchemy import ColumnElement, Connection, func, select

# the window of "recent" request figures (status, /metrics, the error and timeout alerts)
RECENT = timedelta(minutes=5)
UNDELIVERED = ("pending", "sending")


# ------------------------------------------------------------------ processes


def live_window(config: LanewardenConfig) -> timedelta:
    """How stale a heartbeat may be while its process still counts as live.

    The same boundary after which another process may take back its runs, so "live" in
    every report agrees with what the claim kernel will do."""
    dispatcher = config.kanban.dispatcher
    return timedelta(seconds=dispatcher.lease_seconds + dispatcher.heartbeat_seconds)


def live_dispatchers(conn: Connection, config: LanewardenConfig, now: datetime) -> list[Any]:
    """Processes that have not stopped and heartbeated within ``live_window``."""
    return conn.execute(
        select(dispatchers)
        .where(dispatchers.c.state != "stopped", dispatchers.c.heartbeat_at > now - live_window(config))
        .order_by(dispatchers.c.started_at, dispatchers.c.id)
    ).all()


def last_heartbeat(conn: Connection) -> datetime | None:
    """When any process last showed a sign of life (live or not): "no live process since"."""
    return conn.execute(select(func.max(dispatchers.c.heartbeat_at))).scalar()


# ------------------------------------------------------------------- gateways

# a gateway reading older than this many probe intervals is stale: whoever probes it
# (the dispatching processes) has stopped, so "up" or "down" is only what it was
STALE_PROBE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class GatewayReading:
    """The shared probe result of one gateway (gateway_state) and how old it is."""

    checked_at: datetime | None
    age_seconds: float | None
    stale: bool  # never probed, or not within STALE_PROBE_INTERVALS probe intervals
    signals: dict[str, Any]


def gateway_readings(conn: Connection, config: LanewardenConfig, now: datetime) -> dict[str, GatewayReading]:
    """Every configured gateway's last probe, aged against ``now`` (the database's clock)."""
    rows = {
        r.name: r
        for r in conn.execute(
            select(gateway_state.c.name, gateway_state.c.checked_at, gateway_state.c.signals)
        )
    }
    found: dict[str, GatewayReading] = {}
    for name, gw in config.gateways.items():
        row = rows.get(name)
        checked = None if row is None else row.checked_at
        age = None if checked is None else max(0.0, (now - checked).total_seconds())
        stale = age is None or age > STALE_PROBE_INTERVALS * gw.probe_interval_seconds
        found[name] = GatewayReading(checked, age, stale, (row.signals if row is not None else None) or {})
    return found


# ---------------------------------------------------------------------- tasks


def dispatchable(now: datetime) -> ColumnElement[bool]:
    """Ready work nothing but a free slot holds back: parents done, ``not_before`` passed.

    (Pauses, caps and gateway health are what the slot is waiting on: they are reported
    beside this figure, not folded into it.)"""
    return (
        (tasks.c.status == Status.READY)
        & (tasks.c.not_before.is_(None) | (tasks.c.not_before <= now))
        & ~parents_pending()
    )


def dispatchable_tasks(conn: Connection, now: datetime, limit: int) -> list[Any]:
    """The ``limit`` dispatchable tasks that have waited longest (for the reasons they wait)."""
    return conn.execute(
        select(tasks).where(dispatchable(now)).order_by(tasks.c.updated_at, tasks.c.id).limit(limit)
    ).all()


def task_counts(conn: Connection) -> dict[str, int]:
    """Tasks per status, every status present."""
    counts = dict.fromkeys(TASK_STATUSES, 0)
    for status, count in conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status)):
        counts[status] = int(count)
    return counts


def released_count(conn: Connection) -> int:
    """Ready tasks released by ``promote --column active`` or a window, waiting for a slot."""
    return int(
        conn.execute(
            select(func.count()).where(tasks.c.status == Status.READY, tasks.c.released.is_(True))
        ).scalar_one()
    )


# how many of the longest-waiting dispatchable tasks ``held_back`` asks why_waiting about
HELD_BACK_SAMPLE = 20


def held_back(conn: Connection, config: LanewardenConfig, now: datetime) -> list[tuple[str, int]]:
    """Why dispatchable work is not starting: each reason ``why_waiting`` gives (the one
    definition of a task's reasons) with how many of the longest-waiting tasks it holds,
    most common first. In windowed mode a task nobody released is expected to wait and is
    left out; an empty list means nothing but a moment holds the work back."""
    from lanewarden.core.task_view import why_waiting  # task_view reads caps; keep imports one-way
    from lanewarden.core.tasks import Task

    windowed = not config.kanban.dispatcher.enabled
    counted: dict[str, int] = defaultdict(int)
    for row in dispatchable_tasks(conn, now, HELD_BACK_SAMPLE):
        task = Task.from_row(row)
        if windowed and not task.released:
            continue
        for reason in why_waiting(conn, config, task, []):  # dispatchable: no parent pending
            counted[reason] += 1
    return sorted(counted.items(), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True, slots=True)
class OldestWaiting:
    task_id: int
    since: datetime

    def waited(self, now: datetime) -> timedelta:
        return now - self.since


def oldest_dispatchable(conn: Connection, now: datetime) -> OldestWaiting | None:
    """The dispatchable task that has waited longest (since it last changed)."""
    row = conn.execute(
        select(tasks.c.id, tasks.c.updated_at)
        .where(dispatchable(now))
        .order_by(tasks.c.updated_at, tasks.c.id)
        .limit(1)
    ).first()
    return None if row is None else OldestWaiting(row.id, row.updated_at)


# ---------------------------------------------------------------- run figures


@dataclass(frozen=True, slots=True)
class RunSample:
    outcome: str
    latency_ms: float | None
    ttft_ms: float | None
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class RunStats:
    """What a gateway's requests did over a window."""

    requests: int  # requests that reached a verdict (see GATEWAY_VERDICTS)
    errors: int
    timeouts: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def timeout_rate(self) -> float | None:
        return self.timeouts / self.requests if self.requests else None


def recent_runs(conn: Connection, since: datetime) -> dict[str, list[RunSample]]:
    """Finished gateway requests since ``since``, per gateway, oldest first."""
    rows = conn.execute(
        select(runs.c.gateway, runs.c.outcome, runs.c.latency_ms, runs.c.ttft_ms, runs.c.finished_at)
        .where(runs.c.gateway.is_not(None), runs.c.finished_at > since)
        .order_by(runs.c.finished_at)
    )
    found: dict[str, list[RunSample]] = defaultdict(list)
    for r in rows:
        found[r.gateway].append(RunSample(r.outcome, r.latency_ms, r.ttft_ms, r.finished_at))
    return dict(found)


def run_stats(samples: Iterable[RunSample]) -> RunStats:
    verdicts = [s for s in samples if s.outcome in GATEWAY_VERDICTS]
    ok = [s for s in verdicts if s.outcome == Outcome.SUCCEEDED]
    latencies = [s.latency_ms for s in ok if s.latency_ms is not None]
    ttfts = [s.ttft_ms for s in ok if s.ttft_ms is not None]
    return RunStats(
        requests=len(verdicts),
        errors=sum(1 for s in verdicts if s.outcome in GATEWAY_ERRORS),
        timeouts=sum(1 for s in verdicts if s.outcome == Outcome.TIMED_OUT),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        ttft_p50_ms=percentile(ttfts, 50),
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# ---------------------------------------------------------------- concurrency

Interval = tuple[datetime, datetime | None]


def run_intervals(conn: Connection, since: datetime, now: datetime) -> dict[str | None, list[Interval]]:
    """(claimed_at, finished_at) of every run open at some point in ``[since, now]``, per
    gateway (None for runs that use no gateway)."""
    rows = conn.execute(
        select(runs.c.gateway, runs.c.claimed_at, runs.c.finished_at).where(
            runs.c.claimed_at < now, runs.c.finished_at.is_(None) | (runs.c.finished_at > since)
        )
    )
    found: dict[str | None, list[Interval]] = defaultdict(list)
    for r in rows:
        found[r.gateway].append((r.claimed_at, r.finished_at))
    return dict(found)


def in_flight_steps(
    intervals: Iterable[Interval], since: datetime, now: datetime
) -> list[tuple[datetime, int]]:
    """The concurrent-run curve of ``[since, now]`` as (instant, level from then on).

    A run still open counts until now. A finish and a claim at the same instant are a
    slot handed over, not two at once: finishes apply first."""
    changes: list[tuple[datetime, int]] = []
    for claimed, finished in intervals:
        start = max(claimed, since)
        end = now if finished is None else min(finished, now)
        if end <= start:
            continue
        changes.append((start, 1))
        changes.append((end, -1))
    changes.sort(key=lambda c: (c[0], c[1]))
    steps: list[tuple[datetime, int]] = [(since, 0)]
    level = 0
    for at, step in changes:
        level += step
        if steps[-1][0] == at:
            steps[-1] = (at, level)
        else:
            steps.append((at, level))
    return steps


@dataclass(frozen=True, slots=True)
class Concurrency:
    peak: int
    seconds_at_or_above: dict[int, float]  # level -> seconds spent at that level or higher


def concurrency(intervals: Iterable[Interval], since: datetime, now: datetime) -> Concurrency:
    """Peak concurrency over ``[since, now]`` and how long each level was held."""
    steps = in_flight_steps(intervals, since, now)
    spent: dict[int, float] = defaultdict(float)
    for (at, level), (until, _) in zip(steps, [*steps[1:], (now, 0)], strict=True):
        if level > 0 and until > at:
            spent[level] += (until - at).total_seconds()
    peak = max((level for _, level in steps), default=0)
    at_or_above: dict[int, float] = {}
    running = 0.0
    for lvl in range(peak, 0, -1):
        running += spent.get(lvl, 0.0)
        at_or_above[lvl] = running
    return Concurrency(peak, at_or_above)


def limit_history(conn: Connection, since: datetime) -> dict[str, list[Any]]:
    """Recorded limit changes per gateway since ``since``, plus the last one before it
    (the limit in force when the window opens)."""
    found: dict[str, list[Any]] = defaultdict(list)
    before = (
        select(gateway_limit_history.c.gateway, func.max(gateway_limit_history.c.id).label("id"))
        .where(gateway_limit_history.c.at <= since)
        .group_by(gateway_limit_history.c.gateway)
        .subquery()
    )
    rows = conn.execute(
        select(gateway_limit_history)
        .where((gateway_limit_history.c.at > since) | gateway_limit_history.c.id.in_(select(before.c.id)))
        .order_by(gateway_limit_history.c.at, gateway_limit_history.c.id)
    )
    for r in rows:
        found[r.gateway].append(r)
    return dict(found)


def limit_reasons(conn: Connection, gateways: Iterable[str]) -> dict[str, str]:
    """Why each gateway's limit is what it is: the reason of its last recorded change."""
    found: dict[str, str] = {}
    for name in gateways:
        reason = conn.execute(
            select(gateway_limit_history.c.reason)
            .where(gateway_limit_history.c.gateway == name)
            .order_by(gateway_limit_history.c.at.desc(), gateway_limit_history.c.id.desc())
            .limit(1)
        ).scalar()
        if reason is not None:
            found[name] = reason
    return found


# --------------------------------------------------------------------- outbox


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    undelivered: dict[str, int]  # adapter -> pending or sending rows
    dead: dict[str, int]  # adapter -> rows refused for good
    oldest_undelivered: datetime | None
    by_state: dict[tuple[str, str], int]  # (adapter, state) -> rows, for /metrics


def outbox_depth(conn: Connection) -> OutboxDepth:
    undelivered: dict[str, int] = defaultdict(int)
    dead: dict[str, int] = defaultdict(int)
    by_state: dict[tuple[str, str], int] = {}
    oldest: datetime | None = None
    for adapter, state, count, first in conn.execute(
        select(outbox.c.adapter, outbox.c.state, func.count(), func.min(outbox.c.created_at))
        .where(outbox.c.state.in_((*UNDELIVERED, "dead")))
        .group_by(outbox.c.adapter, outbox.c.state)
    ):
        by_state[(adapter, state)] = int(count)
        if state == "dead":
            dead[adapter] += int(count)
            continue
        undelivered[adapter] += int(count)
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return OutboxDepth(dict(undelivered), dict(dead), oldest, by_state)


# ---------------------------------------------------------------- node health


def node_views(conn: Connection, config: LanewardenConfig) -> list[NodeView]:
    """One view per gateway with exporters configured: its newest round, and the newest
    that was read (an exporter that stops answering leaves its last figures, aged)."""
    views = []
    for name, gw in sorted(config.gateways.items()):
        if not gw.node_metrics:
            continue
        newest = select(node_readings).where(node_readings.c.gateway == name)
        latest = conn.execute(newest.order_by(node_readings.c.at.desc()).limit(1)).first()
        known = latest
        if latest is not None and not latest.known:
            known = conn.execute(
                newest.where(node_readings.c.known.is_(True)).order_by(node_readings.c.at.desc()).limit(1)
            ).first()
        views.append(
            NodeView(
                gateway=name,
                urls=tuple(gw.node_metrics),
                latest=None if latest is None else reading_from_row(latest),
                last_known=None if known is None else reading_from_row(known),
            )
        )
    return views


def node_history(conn: Connection, gateway: str, since: datetime) -> list[NodeReading]:
    """Every round for one gateway since ``since``, oldest first (tune, the chart)."""
    rows = conn.execute(
        select(node_readings)
        .where(node_readings.c.gateway == gateway, node_readings.c.at >= since)
        .order_by(node_readings.c.at)
    )
    return [reading_from_row(r) for r in rows]


# ------------------------------------------------------------ chart history


@dataclass(frozen=True, slots=True)
class DeliveredRun:
    """A finished request's answer: its tokens, delivered between ``start`` and ``end``."""

    start: datetime
    end: datetime
    tokens: int


def delivered_runs(conn: Connection, since: datetime) -> dict[str, list[DeliveredRun]]:
    """Requests with a token count that finished after ``since``, per gateway."""
    rows = conn.execute(
        select(
            runs.c.gateway, runs.c.claimed_at, runs.c.started_at, runs.c.finished_at, runs.c.completion_tokens
        ).where(runs.c.gateway.is_not(None), runs.c.finished_at > since, runs.c.completion_tokens > 0)
    )
    found: dict[str, list[DeliveredRun]] = defaultdict(list)
    for r in rows:
        found[r.gateway].append(
            DeliveredRun(r.started_at or r.claimed_at, r.finished_at, r.completion_tokens)
        )
    return dict(found)


def gateway_cap_changes(
    conn: Connection, config: LanewardenConfig, until: datetime
) -> dict[str, list[tuple[datetime, int]]]:
    """Every recorded ``caps set``/``caps reset`` of a gateway up to ``until``: (when, the cap
    from then on). Before the first one the cap was the config's."""
    found: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    rows = conn.execute(
        select(events.c.at, events.c.data)
        .where(events.c.kind == "caps_changed", events.c.at <= until)
        .order_by(events.c.at, events.c.id)
    )
    for r in rows:
        data = r.data or {}
        name = data.get("name")
        if data.get("scope") != "gateway" or name not in config.gateways:
            continue
        value = data.get("value")
        found[name].append((r.at, config.gateways[name].max_concurrency if value is None else int(value)))
    return dict(found)
