"""``tune``: the guide's tuning loop, observed and advised with numbers.

The guide says: start with a cap of 1, watch GPU and CPU use, raise the cap to 2 or 3
only when the hardware is clearly under used, and roll back when latency rises at
constant throughput, timeouts grow, or tasks stay active very long. From the last hour
of one gateway (its node readings, which carry the board's view at each round, and its
runs) this module gives one verdict:

* **overloaded**: timeouts above ``[alerts] timeout_rate``; or time per token (latency
  when tokens are unknown) at p95 risen by ``latency_rise_ratio`` from the first half
  of the hour to the second while throughput stayed within ``FLAT``; or a long tail
  (p95 at least ``LONG_TAIL`` times p50 per token). Proposes one less.
* **under used**: the cap full with dispatchable work waiting for ``FULL_MINUTES`` or
  more, the GPU below ``UNDER_USED_GPU`` percent busy meanwhile, and p95 not rising.
  Proposes one more (one step at a time, as the guide does).
* **fine** otherwise (including "no load to judge").

With ``adaptive = true`` the limiter already runs this loop; the advice explains the
current limit instead of proposing a cap. Nothing here changes a cap: ``tune --apply``
(admin) does, through the same path as ``caps set``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

from lanewarden.core.caps import Limits
from lanewarden.core.clock import utcnow
from lanewarden.core.config import AlertsConfig, LanewardenConfig
from lanewarden.core.nodes import NodeReading
from lanewarden.core.readmodel import node_history, percentile
from lanewarden.core.schema import gateway_limit_history, runs
from lanewarden.core.statuses import Outcome
from sqlalchemy import Connection, select

WINDOW = timedelta(hours=1)
UNDER_USED_GPU = 60.0  # percent: below this with work waiting, the GPU has room
FULL_MINUTES = 10.0  # the cap full with work waiting at least this long in the hour
FLAT = 1.25  # throughput within this factor either way counts as constant
LONG_TAIL = 4.0  # p95 / p50 of time per token
Verdict = Literal["under_used", "overloaded", "fine", "adaptive"]


@dataclass(frozen=True, slots=True)
class RunSample:
    finished_at: datetime
    outcome: str
    latency_ms: float | None
    completion_tokens: int | None

    @property
    def cost_ms(self) -> float | None:
        """Time per token where tokens are known (answers differ in length), else latency."""
        if self.latency_ms is None:
            return None
        if self.completion_tokens:
            return self.latency_ms / self.completion_tokens
        return self.latency_ms


@dataclass(frozen=True, slots=True)
class LimitChange:
    at: datetime
    limit: int
    reason: str


@dataclass(frozen=True, slots=True)
class GatewayHistory:
    """Everything the rules weigh for one gateway (built from the board, or by a test)."""

    gateway: str
    now: datetime
    cap: int
    limit: int
    adaptive: bool
    has_exporters: bool
    readings: list[NodeReading] = field(default_factory=list)
    runs: list[RunSample] = field(default_factory=list)
    limit_changes: list[LimitChange] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Advice:
    gateway: str
    verdict: Verdict
    text: str
    proposed_cap: int | None
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "verdict": self.verdict,
            "text": self.text,
            "proposed_cap": self.proposed_cap,
            "evidence": self.evidence,
        }


# ----------------------------------------------------------------------- rules


def advise(history: GatewayHistory, alerts: AlertsConfig) -> Advice:
    name, cap = history.gateway, history.cap
    ev = _evidence(history, alerts)
    if history.adaptive:
        return Advice(name, "adaptive", _explain_adaptive(history, ev), None, ev)
    gpu = _gpu_phrase(ev)
    p95 = _p95_phrase(ev)
    if ev["timeout_rate"] is not None and ev["timeout_rate"] > alerts.timeout_rate:
        reason = f"{ev['timeouts']} of {ev['finished']} requests timed out ({ev['timeout_rate']:.0%})"
        return _step_down(history, ev, f"{reason}; {gpu}")
    if ev["latency_rising"]:
        reason = f"{p95} at the same throughput ({ev['throughput_ratio']:.2f}x)"
        return _step_down(history, ev, f"{reason}; {gpu}")
    if ev["long_tail"]:
        reason = f"long tail: p95 {ev['tail_ratio']:.1f}x the median time per token"
        return _step_down(history, ev, f"{reason}; {gpu}")
    waited = (
        f"up to {ev['max_waiting']} task(s) waited at cap {cap} for {ev['full_minutes']:.0f} min"
        if ev["full_minutes"] >= 1
        else f"cap {cap} was not full with work waiting"
    )
    if ev["full_minutes"] >= FULL_MINUTES and not ev["latency_rising"]:
        if ev["gpu_util_full"] is not None and ev["gpu_util_full"] < UNDER_USED_GPU:
            text = (
                f"{name}: GPU {ev['gpu_util_full']:.0f}% busy while {waited}; {p95} "
                f"→ try `caps set gateway {name} {cap + 1}`"
            )
            return Advice(name, "under_used", text, cap + 1, ev)
        if ev["gpu_util_full"] is None:
            missing = "no GPU readings" if history.has_exporters else "no node_metrics configured"
            text = f"{name}: fine for now: {waited}; {p95}; {missing}, so whether the GPU has room is unknown"
            return Advice(name, "fine", text, None, ev)
    if not ev["finished"] and not ev["max_waiting"]:
        return Advice(name, "fine", f"{name}: fine: no load in the last hour to judge ({gpu})", None, ev)
    return Advice(name, "fine", f"{name}: fine: {gpu}, {waited}; {p95}", None, ev)


def _step_down(history: GatewayHistory, ev: dict[str, Any], reason: str) -> Advice:
    name, cap = history.gateway, history.cap
    if cap <= 1:
        text = (
            f"{name}: overloaded at cap 1: {reason} → the server is too slow for this work "
            "(a smaller model, more GPU, or longer timeouts)"
        )
        return Advice(name, "overloaded", text, None, ev)
    text = f"{name}: overloaded: {reason} → try `caps set gateway {name} {cap - 1}`"
    return Advice(name, "overloaded", text, cap - 1, ev)


def _explain_adaptive(history: GatewayHistory, ev: dict[str, Any]) -> str:
    name = history.gateway
    last = history.limit_changes[-1] if history.limit_changes else None
    since = f", set {last.at:%H:%M} ({last.reason})" if last is not None else ""
    changes = len(history.limit_changes)
    return (
        f"{name}: adaptive: limit {history.limit} of cap {history.cap}{since}, {changes} change(s) "
        f"in the last hour; {_gpu_phrase(ev)}; {_p95_phrase(ev)}; "
        "the limiter climbs while throughput grows and steps back when time per token rises"
    )


def _gpu_phrase(ev: dict[str, Any]) -> str:
    if ev["gpu_util"] is None:
        return "GPU busy unknown"
    return f"GPU {ev['gpu_util']:.0f}% busy on average"


def _p95_phrase(ev: dict[str, Any]) -> str:
    before, after = ev["p95_before_ms"], ev["p95_after_ms"]
    if before is None or after is None:
        return "p95 -"
    if ev["latency_rising"]:
        return f"p95 rose {after / before:.1f}x ({_ms(before)} -> {_ms(after)} per token)"
    return "p95 flat" if after / before < 1.2 else f"p95 up {after / before:.1f}x"


def _ms(value: float) -> str:
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.1f}s"


def _evidence(history: GatewayHistory, alerts: AlertsConfig) -> dict[str, Any]:
    readings = sorted(history.readings, key=lambda r: r.at)
    full_seconds = 0.0
    full_utils: list[float] = []
    # a round stands for the time until the next one, but no longer than two usual gaps
    # (a leader change or a stopped board leaves holes that are not "full")
    gaps = sorted((b.at - a.at).total_seconds() for a, b in pairwise(readings))
    longest = 2 * gaps[len(gaps) // 2] if gaps else 0.0
    for i, here in enumerate(readings):
        # only time at today's cap is evidence about it: after `caps set gateway gpu1 3` the
        # minutes full at cap 2 say nothing about 3 (the guide: one step, then observe)
        if here.cap == history.cap and here.cap > 0 and here.in_flight >= here.cap and here.waiting > 0:
            end = readings[i + 1].at if i + 1 < len(readings) else history.now
            full_seconds += min(longest, max(0.0, (end - here.at).total_seconds()))
            if here.known and here.figures.gpu_util is not None:
                full_utils.append(here.figures.gpu_util)
    utils = [r.figures.gpu_util for r in readings if r.known and r.figures.gpu_util is not None]
    finished = [
        r
        for r in history.runs
        if r.outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.TIMED_OUT, Outcome.BACKPRESSURE)
    ]
    timeouts = sum(1 for r in finished if r.outcome == Outcome.TIMED_OUT)
    ok = [r for r in finished if r.outcome == Outcome.SUCCEEDED and r.cost_ms is not None]
    start = min((r.finished_at for r in ok), default=history.now)
    middle = start + (history.now - start) / 2
    before = [r.cost_ms for r in ok if r.finished_at < middle and r.cost_ms is not None]
    after = [r.cost_ms for r in ok if r.finished_at >= middle and r.cost_ms is not None]
    enough = len(before) >= alerts.min_samples and len(after) >= alerts.min_samples
    p95_before = percentile(before, 95) if enough else None
    p95_after = percentile(after, 95) if enough else None

    def throughput(rows: list[RunSample]) -> float:
        return float(sum(r.completion_tokens or 1 for r in rows))

    half = [r for r in ok if r.finished_at < middle], [r for r in ok if r.finished_at >= middle]
    ratio = throughput(half[1]) / throughput(half[0]) if enough and throughput(half[0]) else None
    rising = (
        p95_before is not None
        and p95_after is not None
        and p95_before > 0
        and ratio is not None
        and 1 / FLAT <= ratio <= FLAT
        and p95_after / p95_before >= alerts.latency_rise_ratio
    )
    costs = [r.cost_ms for r in ok if r.cost_ms is not None]
    p50 = percentile(costs, 50) if len(costs) >= 2 * alerts.min_samples else None
    p95 = percentile(costs, 95) if p50 is not None else None
    tail = p95 / p50 if p50 and p95 else None
    return {
        "window_minutes": WINDOW.total_seconds() / 60,
        "cap": history.cap,
        "limit": history.limit,
        "gpu_util": sum(utils) / len(utils) if utils else None,
        "gpu_util_full": sum(full_utils) / len(full_utils) if full_utils else None,
        "full_minutes": full_seconds / 60,
        "max_waiting": max((r.waiting for r in readings), default=0),
        "finished": len(finished),
        "timeouts": timeouts,
        "timeout_rate": timeouts / len(finished) if len(finished) >= alerts.min_samples else None,
        "p95_before_ms": p95_before,
        "p95_after_ms": p95_after,
        "throughput_ratio": ratio,
        "latency_rising": rising,
        "tail_ratio": tail,
        "long_tail": tail is not None and tail >= LONG_TAIL,
    }


# --------------------------------------------------------------- from the board


def load_history(
    conn: Connection, config: LanewardenConfig, gateway: str, now: datetime | None = None
) -> GatewayHistory:
    now = now or utcnow()
    since = now - WINDOW
    window = Limits.load(conn, config).gateways[gateway]
    rows = conn.execute(
        select(runs.c.finished_at, runs.c.outcome, runs.c.latency_ms, runs.c.completion_tokens).where(
            runs.c.gateway == gateway, runs.c.finished_at > since
        )
    )
    history = gateway_limit_history.c
    changes = conn.execute(
        select(history.at, history.current_limit, history.reason)
        .where(history.gateway == gateway, history.at > since)
        .order_by(history.at)
    )
    return GatewayHistory(
        gateway=gateway,
        now=now,
        cap=window.cap,
        limit=window.limit,
        adaptive=config.gateways[gateway].adaptive,
        has_exporters=bool(config.gateways[gateway].node_metrics),
        readings=node_history(conn, gateway, since),
        runs=[RunSample(r.finished_at, r.outcome, r.latency_ms, r.completion_tokens) for r in rows],
        limit_changes=[LimitChange(c.at, c.current_limit, c.reason) for c in changes],
    )


def advise_all(
    conn: Connection, config: LanewardenConfig, gateway: str | None = None, now: datetime | None = None
) -> list[Advice]:
    names = [gateway] if gateway else sorted(config.gateways)
    return [advise(load_history(conn, config, name, now), config.alerts) for name in names]


# status (and the web strip, App Home) ask for the advice often; an hour of history does
# not change in half a minute, so each board's last answer is reused that long
ADVICE_MAX_AGE = 30.0
_recent: dict[str, tuple[float, list[Advice]]] = {}
_recent_lock = threading.Lock()


def recent_advice(board_url: str, conn: Connection, config: LanewardenConfig) -> list[Advice]:
    """``advise_all`` for every gateway, computed at most every ``ADVICE_MAX_AGE`` seconds."""
    clock = time.monotonic()
    with _recent_lock:
        cached = _recent.get(board_url)
    if cached is not None and clock - cached[0] < ADVICE_MAX_AGE:
        return cached[1]
    advice = advise_all(conn, config)
    with _recent_lock:
        _recent[board_url] = (clock, advice)
    return advice


def forget_advice(board_url: str) -> None:
    """After ``tune --apply`` the cached advice proposes a cap already set."""
    with _recent_lock:
        _recent.pop(board_url, None)
