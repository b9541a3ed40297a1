"""Saturation alerts, evaluated by the leader on an interval.

Rules (thresholds in ``[alerts]``): a gateway down; its error or timeout rate over the
last five minutes; latency rising while throughput stays the same (the sign of a
saturated server); a server-side queue building up (vLLM ``num_requests_waiting``,
llama.cpp ``requests_deferred``); tasks active past their max runtime; the oldest
dispatchable task waiting too long; from the node exporters, VRAM nearly full, RAM
short, and a GPU saturated while latency grows.

Against flapping: a condition must hold on two evaluations in a row to fire and be
clear on two in a row to resolve, and rate/latency rules clear only below 80% of their
threshold (hysteresis). An alert that resolved does not fire again within
``cooldown_seconds``. Each firing and each resolution is one event plus one outbox row
per alert channel, and one log line; the state is rebuilt from those events when
leadership moves, so a failover does not repeat an alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lanewarden.core.board import Board
from lanewarden.core.clock import format_seconds, utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.nodes import NodeView
from lanewarden.core.readmodel import (
    RECENT,
    RunSample,
    node_views,
    oldest_dispatchable,
    percentile,
    recent_runs,
    run_stats,
)
from lanewarden.core.schema import events, gateway_state, runs, tasks
from lanewarden.core.statuses import Outcome, Status
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("lanewarden.alerts")

FIRE_AFTER = 2  # consecutive evaluations
CLEAR_AFTER = 2
CLEAR_RATIO = 0.8
VRAM_CLEAR_POINTS = 0.05
BASELINE = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict for one key: is the condition present, and how to say it."""

    key: str
    present: bool
    message: str
    clearly_absent: bool = True  # below the hysteresis band (for rates and latency)


@dataclass
class AlertState:
    firing: bool = False
    streak: int = 0  # consecutive evaluations disagreeing with ``firing``
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    message: str = ""


@dataclass
class AlertEngine:
    board: Board
    config: LanewardenConfig
    is_leader: Callable[[], bool] = lambda: True
    states: dict[str, AlertState] = field(default_factory=dict)
    _loaded: bool = False

    async def run(self) -> None:
        interval = self.config.alerts.interval_seconds
        while True:
            try:
                await asyncio.to_thread(self.evaluate)
            except DBAPIError as exc:
                log.warning("alert rules skipped: database unavailable: %s", exc.orig)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, now: datetime | None = None) -> list[tuple[str, str]]:
        """One round: returns the (key, "fired"|"resolved") transitions it announced."""
        now = now or utcnow()
        if not self._loaded:
            self._load_state()
        findings = self.findings(now)
        seen = {f.key for f in findings}
        # a key that no rule reports any more (a gateway removed, a task finished) is clear
        for key, state in self.states.items():
            if state.firing and key not in seen:
                findings.append(Finding(key, False, state.message))
        announced = []
        for finding in findings:
            change = self._step(finding, now)
            if change and self.is_leader():
                self._announce(finding, change, now)
                announced.append((finding.key, change))
        return announced

    def _step(self, finding: Finding, now: datetime) -> str | None:
        state = self.states.setdefault(finding.key, AlertState())
        cooldown = timedelta(seconds=self.config.alerts.cooldown_seconds)
        if not state.firing:
            if not finding.present:
                state.streak = 0
                return None
            state.streak += 1
            in_cooldown = state.resolved_at is not None and now - state.resolved_at < cooldown
            if state.streak >= FIRE_AFTER and not in_cooldown:
                state.firing, state.streak, state.fired_at, state.message = True, 0, now, finding.message
                return "fired"
            return None
        if finding.present or not finding.clearly_absent:
            state.streak = 0
            return None
        state.streak += 1
        if state.streak >= CLEAR_AFTER:
            state.firing, state.streak, state.resolved_at = False, 0, now
            return "resolved"
        return None

    def _announce(self, finding: Finding, change: str, now: datetime) -> None:
        state = self.states[finding.key]
        if change == "fired":
            text = f":rotating_light: {finding.message}"
            kind = "alert"
            log.warning("ALERT %s", finding.message)
        else:
            lasted = format_seconds((now - state.fired_at).total_seconds()) if state.fired_at else "?"
            text = f":white_check_mark: resolved after {lasted}: {state.message}"
            kind = "alert_resolved"
            log.info("RESOLVED %s", state.message)
        self.board.notify(
            "alerts", "alerts", kind, text, {"key": finding.key, "state": change}, outbox_kind="alert"
        )

    def _load_state(self) -> None:
        """Rebuild firing alerts from the event log (a new leader must not repeat them)."""
        with self.board.db.read() as conn:
            rows = conn.execute(
                select(events.c.kind, events.c.at, events.c.message, events.c.data)
                .where(events.c.kind.in_(("alert", "alert_resolved")))
                .order_by(events.c.id.desc())
                .limit(500)
            ).all()
        for row in reversed(rows):
            key = (row.data or {}).get("key")
            if not key:
                continue
            state = self.states.setdefault(key, AlertState())
            if row.kind == "alert":
                state.firing, state.fired_at = True, row.at
                state.message = row.message.removeprefix(":rotating_light: ")
            else:
                state.firing, state.resolved_at = False, row.at
        self._loaded = True

    # ----------------------------------------------------------------- rules

    def findings(self, now: datetime) -> list[Finding]:
        cfg = self.config.alerts
        found: list[Finding] = []
        with self.board.db.read() as conn:
            states = {r.name: r for r in conn.execute(select(gateway_state))}
            recent = recent_runs(conn, now - BASELINE)
            active = conn.execute(
                select(tasks.c.id, tasks.c.title, tasks.c.profile, runs.c.claimed_at)
                .join(runs, runs.c.id == tasks.c.current_run_id)
                .where(tasks.c.status == Status.ACTIVE)
            ).all()
            oldest = oldest_dispatchable(conn, now)
            nodes = node_views(conn, self.config)
        for view in nodes:
            found += self._node_rules(view, recent.get(view.gateway, []), now)
        for name in sorted(self.config.gateways):
            state = states.get(name)
            down = state is not None and state.healthy is False
            detail = f" ({state.last_error})" if down and state.last_error else ""
            found.append(Finding(f"gateway_down:{name}", down, f"gateway {name} is down{detail}"))
            mine = recent.get(name, [])
            found += self._rate_rules(name, [r for r in mine if r.finished_at > now - RECENT])
            found.append(self._latency_rule(name, mine, now))
            signals = (state.signals or {}) if state is not None else {}
            waiting = signals.get("waiting")
            if waiting is not None:
                found.append(
                    Finding(
                        f"server_queue:{name}",
                        waiting >= cfg.server_queue,
                        f"gateway {name} is queueing {waiting:g} request(s) server-side "
                        f"(threshold {cfg.server_queue}): "
                        + (
                            "its adaptive limit is stepping down; if the queue stays, lower its cap"
                            if self.config.gateways[name].adaptive
                            else "lower its cap or enable adaptive"
                        ),
                        clearly_absent=waiting < cfg.server_queue * CLEAR_RATIO,
                    )
                )
        for row in active:
            profile = self.config.profiles.get(row.profile)
            limit = (
                profile.max_runtime_seconds
                if profile and profile.max_runtime_seconds
                else cfg.max_runtime_seconds
            )
            running_for = (now - row.claimed_at).total_seconds()
            found.append(
                Finding(
                    f"stuck:{row.id}",
                    running_for > limit,
                    f"task #{row.id} ({row.title[:60]}) has been active for {format_seconds(running_for)}, "
                    f"past its max runtime of {format_seconds(limit)}",
                )
            )
        waited = oldest.waited(now).total_seconds() if oldest is not None else 0.0
        found.append(
            Finding(
                "oldest_ready",
                waited > cfg.oldest_ready_seconds,
                f"the oldest dispatchable task has waited {format_seconds(waited)} "
                f"(threshold {format_seconds(cfg.oldest_ready_seconds)}): "
                "caps too low, a gateway paused or down?",
                clearly_absent=waited < cfg.oldest_ready_seconds * CLEAR_RATIO,
            )
        )
        return found

    def _rate_rules(self, name: str, samples: list[RunSample]) -> list[Finding]:
        cfg = self.config.alerts
        stats = run_stats(samples)
        total = stats.requests
        enough = total >= cfg.min_samples
        error_rate = stats.error_rate or 0.0
        timeout_rate = stats.timeout_rate or 0.0
        return [
            Finding(
                f"error_rate:{name}",
                enough and error_rate > cfg.error_rate,
                f"gateway {name}: {error_rate:.0%} of {total} requests failed in 5 minutes "
                f"(threshold {cfg.error_rate:.0%})",
                clearly_absent=not enough or error_rate < cfg.error_rate * CLEAR_RATIO,
            ),
            Finding(
                f"timeout_rate:{name}",
                enough and timeout_rate > cfg.timeout_rate,
                f"gateway {name}: {timeout_rate:.0%} of {total} requests timed out in 5 minutes "
                f"(threshold {cfg.timeout_rate:.0%}): it is overloaded, lower its cap",
                clearly_absent=not enough or timeout_rate < cfg.timeout_rate * CLEAR_RATIO,
            ),
        ]

    def _latency_rule(self, name: str, rows: list[RunSample], now: datetime) -> Finding:
        """Latency up while throughput is flat: more concurrency is only adding queueing."""
        cfg = self.config.alerts
        key = f"latency_rising:{name}"
        change = latency_change(rows, now, cfg.min_samples)
        if change is None:
            return Finding(key, False, "", clearly_absent=True)
        return Finding(
            key,
            change.flat and change.ratio >= cfg.latency_rise_ratio,
            f"gateway {name}: median latency rose {change.ratio:.1f}x ({change.describe()}) "
            "at the same throughput: it is saturated, lower its cap",
            clearly_absent=change.ratio < cfg.latency_rise_ratio * CLEAR_RATIO or not change.flat,
        )

    def _node_rules(self, view: NodeView, rows: list[RunSample], now: datetime) -> list[Finding]:
        """VRAM nearly full, RAM short, and a GPU saturated while latency grows.

        Unknown figures (the exporters did not answer) neither fire nor resolve anything:
        the last verdict stands until the host is read again."""
        cfg = self.config.alerts
        name = view.gateway
        figures = view.latest.figures if view.latest is not None and view.known else None
        found = []
        vram = figures.vram_ratio if figures is not None else None
        found.append(
            Finding(
                f"vram_high:{name}",
                vram is not None and vram >= cfg.vram_usage,
                f"node {name}: VRAM {vram or 0:.0%} used (threshold {cfg.vram_usage:.0%}): a larger "
                "context or another model will not fit; lower its cap or its context length",
                # VRAM moves in small steps (vLLM reserves most of it up front): a 5-point band
                clearly_absent=vram is not None and vram < cfg.vram_usage - VRAM_CLEAR_POINTS,
            )
        )
        ram = figures.ram_available_ratio if figures is not None else None
        found.append(
            Finding(
                f"ram_low:{name}",
                ram is not None and ram < cfg.ram_available_min,
                f"node {name}: only {ram or 0:.0%} of its RAM is available "
                f"(threshold {cfg.ram_available_min:.0%}): a model spilling to the CPU, or another process",
                clearly_absent=ram is not None and ram * CLEAR_RATIO >= cfg.ram_available_min,
            )
        )
        util = figures.gpu_util if figures is not None else None
        change = latency_change(rows, now, cfg.min_samples)
        growing = change is not None and change.ratio >= cfg.latency_rise_ratio
        found.append(
            Finding(
                f"gpu_saturated:{name}",
                util is not None and util >= cfg.gpu_saturated_percent and growing,
                f"node {name}: GPU {util or 0:.0f}% busy while median latency rose "
                f"{change.ratio if change else 0:.1f}x ({change.describe() if change else '-'}): "
                "the GPU is saturated, more concurrency only queues; lower its cap",
                clearly_absent=util is not None
                and (util < cfg.gpu_saturated_percent * CLEAR_RATIO or change is None or not growing),
            )
        )
        return found


@dataclass(frozen=True, slots=True)
class LatencyChange:
    """Median latency (TTFT where measured) of the last five minutes against the 25 before."""

    before_ms: float
    now_ms: float
    flat: bool  # throughput within 0.75..1.33 of before

    @property
    def ratio(self) -> float:
        return self.now_ms / self.before_ms if self.before_ms else 0.0

    def describe(self) -> str:
        return f"{self.before_ms / 1000:.1f}s -> {self.now_ms / 1000:.1f}s"


def latency_change(rows: list[RunSample], now: datetime, min_samples: int) -> LatencyChange | None:
    def sample(r: RunSample) -> float | None:
        return r.ttft_ms if r.ttft_ms is not None else r.latency_ms

    ok = [r for r in rows if r.outcome == Outcome.SUCCEEDED and sample(r) is not None]
    recent = [r for r in ok if r.finished_at > now - RECENT]
    before = [r for r in ok if r.finished_at <= now - RECENT]
    if len(recent) < min_samples or len(before) < min_samples:
        return None
    recent_rate = len(recent) / RECENT.total_seconds()
    before_rate = len(before) / (BASELINE - RECENT).total_seconds()
    flat = before_rate > 0 and 0.75 <= recent_rate / before_rate <= 1.33
    p50_now = percentile([v for r in recent if (v := sample(r)) is not None], 50) or 0.0
    p50_before = percentile([v for r in before if (v := sample(r)) is not None], 50) or 0.0
    return LatencyChange(p50_before, p50_now, flat)
