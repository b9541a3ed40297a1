"""``/metrics``: the board, its gateways and this process, in Prometheus text format.

Two kinds of figures, in one registry of our own (never the global one):

* **Board-wide, read from the database at every scrape** (in a thread, one read
  transaction of a few small queries): tasks by status, in-flight / limit / cap per
  gateway and profile, health, pauses, backpressure, what each server reports about
  itself (``gateway_state.signals``), outbox depth and live processes. Every ``serve``
  process reports the same values: aggregate them with ``max``, not ``sum``.
* **This process's own**, from the dispatcher's observer hooks: claims, finished runs by
  outcome, request latency, time to first token, dispatch delay, tokens, and the
  scheduler's job runs and misfires. Sum these across processes.

The window scheduler reports each run through ``Metrics.job_ran(name, outcome)``, its
run hook, wired by ``serve``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lanewarden.core.board import Board
from lanewarden.core.caps import Limits, Usage
from lanewarden.core.claims import Claim, Completion, Finished
from lanewarden.core.dispatcher import DispatchObserver
from lanewarden.core.liveness import SKEW_WARN_SECONDS, database_now
from lanewarden.core.nodes import NodeView
from lanewarden.core.readmodel import (
    GatewayReading,
    OutboxDepth,
    gateway_readings,
    limit_reasons,
    live_dispatchers,
    node_views,
    oldest_dispatchable,
    outbox_depth,
    task_counts,
)
from lanewarden.core.schema import gateway_state
from lanewarden.core.statuses import RUN_OUTCOMES, TASK_STATUSES, Outcome
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import select

if TYPE_CHECKING:
    from lanewarden.core.dispatcher import Dispatcher

log = logging.getLogger("lanewarden.metrics")

NO_GATEWAY = "none"  # label for runs that use no gateway (command and noop runners)
SCRAPE_DB_TIMEOUT = 10.0
# LLM requests take from tenths of a second to the 10-minute default timeout
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))
# from "claimed at once" to "waited all day for a night window"
DELAY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, float("inf"))
# (signals key, metric suffix, help): what a server reports, as gauges per gateway
SERVER_GAUGES = (
    ("running", "server_running", "Requests the server says it is processing."),
    ("waiting", "server_waiting", "Requests queued inside the server (vLLM waiting, llama.cpp deferred)."),
    ("kv_cache_usage", "server_kv_cache_usage_ratio", "KV-cache usage reported by the server, 0..1."),
    ("slots_busy", "server_slots_busy", "llama.cpp slots processing a request."),
    ("slots_total", "server_slots_total", "llama.cpp slots (parallel sequences)."),
    ("loaded_models", "server_loaded_models", "Models loaded in memory (Ollama)."),
    ("cpu_offload_bytes", "server_cpu_offload_bytes", "Bytes of loaded models not in VRAM (Ollama)."),
)


@dataclass(slots=True)
class BoardSnapshot:
    """Everything the board-wide gauges need, read in one transaction (core/readmodel.py)."""

    at: datetime
    counts: dict[str, int]
    oldest_ready: datetime | None  # since when the oldest dispatchable task has waited
    limits: Limits
    usage: Usage
    signals: dict[str, dict[str, Any]]
    outbox: OutboxDepth
    live_processes: int = 0
    nodes: list[NodeView] = field(default_factory=list)
    clock_skews: dict[str, float] = field(default_factory=dict)  # live dispatcher -> seconds
    limit_reasons: dict[str, str] = field(default_factory=dict)  # gateway -> last change's reason
    readings: dict[str, GatewayReading] = field(default_factory=dict)  # the last probe and its age


def load_snapshot(board: Board) -> BoardSnapshot:
    with board.db.read() as conn:
        now = database_now(conn)  # heartbeats are on the database's clock
        limits = Limits.load(conn, board.config)
        usage = Usage.load(conn)
        counts = task_counts(conn)
        oldest = oldest_dispatchable(conn, now)
        signals = {
            r.name: r.signals
            for r in conn.execute(select(gateway_state.c.name, gateway_state.c.signals))
            if isinstance(r.signals, dict)
        }
        depth = outbox_depth(conn)
        live_rows = live_dispatchers(conn, board.config, now)
        live = len(live_rows)
        nodes = node_views(conn, board.config)
        reasons = limit_reasons(conn, board.config.gateways)
        readings = gateway_readings(conn, board.config, now)
    skews = {r.id: r.clock_skew_ms / 1000 for r in live_rows if r.clock_skew_ms is not None}
    return BoardSnapshot(
        now,
        counts,
        _aware(oldest.since) if oldest else None,
        limits,
        usage,
        signals,
        depth,
        live,
        nodes,
        skews,
        reasons,
        readings,
    )


def _aware(value: Any) -> datetime | None:
    """``min()`` over a UTCDateTime column comes back without the type's conversion on SQLite."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# (figure, metric suffix, help): the host beside each gateway, as its exporters said
NODE_GAUGES = (
    ("cpu_busy", "cpu_busy_ratio", "Share of the host's CPU time not idle between two scrapes, 0..1."),
    ("load1", "load1", "The host's 1-minute load average (node_exporter)."),
    ("ram_available_bytes", "memory_available_bytes", "MemAvailable of the host (node_exporter)."),
    ("ram_total_bytes", "memory_total_bytes", "MemTotal of the host (node_exporter)."),
)
GPU_GAUGES = (
    ("util", "gpu_utilization_percent", "GPU busy, 0..100 (DCGM_FI_DEV_GPU_UTIL, gpu_gfx_activity)."),
    ("vram_used_bytes", "gpu_vram_used_bytes", "VRAM in use (FB_USED, gpu_used_vram)."),
    ("vram_total_bytes", "gpu_vram_total_bytes", "VRAM of the card (FB_FREE + FB_USED [+ FB_RESERVED])."),
    ("temperature_c", "gpu_temperature_celsius", "GPU temperature."),
    ("power_w", "gpu_power_watts", "GPU power draw."),
)


def node_families(views: list[NodeView], now: datetime) -> Iterator[Metric]:
    """The node exporters' figures re-exported with a ``gateway`` label: the last ones read
    (``lanewarden_node_up`` 0 and a growing age when the exporters stop answering)."""
    up = GaugeMetricFamily(
        "lanewarden_node_up", "1 when the last scrape of the host's exporters was read.", labels=["gateway"]
    )
    age = GaugeMetricFamily(
        "lanewarden_node_reading_age_seconds", "Age of the figures below.", labels=["gateway"]
    )
    host = {
        key: GaugeMetricFamily(f"lanewarden_node_{suffix}", doc, labels=["gateway"])
        for key, suffix, doc in NODE_GAUGES
    }
    gpu = {
        key: GaugeMetricFamily(f"lanewarden_node_{suffix}", doc, labels=["gateway", "gpu", "model"])
        for key, suffix, doc in GPU_GAUGES
    }
    for view in views:
        if view.latest is None:
            continue
        up.add_metric([view.gateway], int(view.known))
        if view.last_known is None:
            continue
        age.add_metric([view.gateway], max(0.0, (now - view.last_known.at).total_seconds()))
        figures = view.last_known.figures
        for key, family in host.items():
            value = getattr(figures, key)
            if value is not None:
                family.add_metric([view.gateway], float(value))
        for card in figures.gpus:
            for key, family in gpu.items():
                value = getattr(card, key)
                if value is not None:
                    family.add_metric([view.gateway, card.gpu, card.model or ""], float(value))
    yield from (up, age, *host.values(), *gpu.values())


class BoardCollector:
    """Turns the latest snapshot into gauge families; absent snapshot = database down."""

    def __init__(self) -> None:
        self.snapshot: BoardSnapshot | None = None

    def describe(self) -> list[Metric]:
        return []  # the families depend on the config; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        up = GaugeMetricFamily("lanewarden_database_up", "1 when the last scrape could read the board.")
        up.add_metric([], 0 if snap is None else 1)
        yield up
        if snap is None:
            return
        yield from self._tasks(snap)
        yield from self._caps(snap)
        yield from self._gateways(snap)
        yield from self._outbox(snap)
        yield from node_families(snap.nodes, snap.at)
        live = GaugeMetricFamily("lanewarden_dispatchers_live", "Serve processes heartbeating on this board.")
        live.add_metric([], snap.live_processes)
        yield live
        skew = GaugeMetricFamily(
            "lanewarden_dispatcher_clock_skew_seconds",
            "Each live serve process's clock minus the database's, at its last heartbeat "
            f"(leases do not depend on it; above {SKEW_WARN_SECONDS:g}s fix the host's time).",
            labels=["dispatcher"],
        )
        for dispatcher_id, seconds in sorted(snap.clock_skews.items()):
            skew.add_metric([dispatcher_id], seconds)
        yield skew

    def _tasks(self, snap: BoardSnapshot) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("lanewarden_tasks", "Tasks on the board by status.", labels=["status"])
        for status in TASK_STATUSES:
            by_status.add_metric([status], snap.counts.get(status, 0))
        yield by_status
        oldest = GaugeMetricFamily(
            "lanewarden_oldest_ready_task_age_seconds",
            "How long the oldest dispatchable task has waited (0 when none).",
        )
        age = (snap.at - snap.oldest_ready).total_seconds() if snap.oldest_ready else 0.0
        oldest.add_metric([], max(0.0, age))
        yield oldest

    def _caps(self, snap: BoardSnapshot) -> Iterator[Metric]:
        limits, usage = snap.limits, snap.usage
        board = {
            "in_flight": ("Open runs on the whole board.", usage.total),
            "cap": ("kanban.dispatcher.max_active_tasks, or its live override.", limits.board_cap),
            "paused": ("1 when the whole board is paused.", int(limits.is_paused("board", ""))),
        }
        for suffix, (doc, value) in board.items():
            family = GaugeMetricFamily(f"lanewarden_board_{suffix}", doc)
            family.add_metric([], value)
            yield family
        in_flight = GaugeMetricFamily(
            "lanewarden_profile_in_flight", "Open runs per profile.", labels=["profile"]
        )
        cap = GaugeMetricFamily(
            "lanewarden_profile_cap", "Parallel runs allowed per profile.", labels=["profile"]
        )
        paused = GaugeMetricFamily(
            "lanewarden_profile_paused", "1 when the profile is paused.", labels=["profile"]
        )
        for name, value in sorted(limits.profile_caps.items()):
            in_flight.add_metric([name], usage.by_profile.get(name, 0))
            cap.add_metric([name], value)
            paused.add_metric([name], int(limits.is_paused("profile", name)))
        yield from (in_flight, cap, paused)

    def _gateways(self, snap: BoardSnapshot) -> Iterator[Metric]:
        labels = ["gateway"]
        families = {
            "in_flight": GaugeMetricFamily(
                "lanewarden_gateway_in_flight", "Open runs on the gateway (all processes).", labels=labels
            ),
            "limit": GaugeMetricFamily(
                "lanewarden_gateway_limit",
                "Current window: the cap, or less during slow start or adaptive backoff.",
                labels=labels,
            ),
            "cap": GaugeMetricFamily(
                "lanewarden_gateway_cap", "max_concurrency, or its live override.", labels=labels
            ),
            "healthy": GaugeMetricFamily(
                "lanewarden_gateway_healthy", "1 up, 0 down (absent until first probed).", labels=labels
            ),
            "probe_age": GaugeMetricFamily(
                "lanewarden_gateway_probe_age_seconds",
                "Seconds since the gateway was last probed (absent until first probed).",
                labels=labels,
            ),
            "stale": GaugeMetricFamily(
                "lanewarden_gateway_stale",
                "1 when no probe came within 3 probe intervals: healthy is only what it was.",
                labels=labels,
            ),
            "paused": GaugeMetricFamily("lanewarden_gateway_paused", "1 when paused.", labels=labels),
            "backoff": GaugeMetricFamily(
                "lanewarden_gateway_backoff_seconds",
                "Seconds left of a 429/503 backoff (Retry-After); 0 when none.",
                labels=labels,
            ),
        }
        server = {
            key: GaugeMetricFamily(f"lanewarden_gateway_{suffix}", doc, labels=labels)
            for key, suffix, doc in SERVER_GAUGES
        }
        ttft = GaugeMetricFamily(
            "lanewarden_gateway_server_ttft_p50_seconds",
            "Median time to first token the server reports (its histogram, last probe interval).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "lanewarden_gateway_signals_age_seconds",
            "Age of the server's last reported signals.",
            labels=labels,
        )
        reason = GaugeMetricFamily(
            "lanewarden_gateway_limit_reason",
            "1 for why the limit is what it is: the reason of its last recorded change.",
            labels=["gateway", "reason"],
        )
        for name, why in sorted(snap.limit_reasons.items()):
            reason.add_metric([name, why], 1)
        yield reason
        for name, window in sorted(snap.limits.gateways.items()):
            families["in_flight"].add_metric([name], snap.usage.by_gateway.get(name, 0))
            families["limit"].add_metric([name], window.limit)
            families["cap"].add_metric([name], window.cap)
            if window.healthy is not None:
                families["healthy"].add_metric([name], int(window.healthy))
            reading = snap.readings.get(name)
            if reading is not None:
                if reading.age_seconds is not None:
                    families["probe_age"].add_metric([name], reading.age_seconds)
                families["stale"].add_metric([name], int(reading.stale))
            families["paused"].add_metric([name], int(snap.limits.is_paused("gateway", name)))
            backoff = (window.backoff_until - snap.at).total_seconds() if window.backoff_until else 0.0
            families["backoff"].add_metric([name], max(0.0, backoff))
            signals = snap.signals.get(name) or {}
            for key, family in server.items():
                value = signals.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family.add_metric([name], float(value))
            if isinstance(signals.get("ttft_p50_ms"), int | float):
                ttft.add_metric([name], signals["ttft_p50_ms"] / 1000)
            read_at = _parse_time(signals.get("read_at"))
            if read_at is not None:
                age.add_metric([name], max(0.0, (snap.at - read_at).total_seconds()))
        yield from families.values()
        yield from server.values()
        yield ttft
        yield age

    def _outbox(self, snap: BoardSnapshot) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "lanewarden_outbox_depth",
            "Notifications not yet delivered, per chat adapter.",
            labels=["adapter"],
        )
        dead = GaugeMetricFamily(
            "lanewarden_outbox_dead",
            "Notifications refused for good (kept with their reason).",
            labels=["adapter"],
        )
        adapters = sorted({adapter for adapter, _ in snap.outbox.by_state})
        for adapter in adapters:
            pending = snap.outbox.undelivered.get(adapter, 0)
            depth.add_metric([adapter], pending)
            dead.add_metric([adapter], snap.outbox.dead.get(adapter, 0))
        yield depth
        yield dead


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _aware(datetime.fromisoformat(value))
    except ValueError:
        return None


class MetricsObserver(DispatchObserver):
    """The dispatcher's hooks. Never raises: a metrics bug must not stop the flush loop."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def claimed(self, claim: Claim) -> None:
        try:
            self.metrics.record_claim(claim)
        except Exception:
            log.exception("metrics: recording a claim failed")

    def finished(self, completion: Completion, result: Finished, gateway: str | None) -> None:
        try:
            self.metrics.record_finish(completion, result, gateway)
        except Exception:
            log.exception("metrics: recording a finished run failed")


class Metrics:
    """The registry behind ``/metrics`` and the small API the rest of ``serve`` reports to."""

    def __init__(self, board: Board, *, is_leader: Callable[[], bool] | None = None) -> None:
        self.board = board
        # no `_created` twin for every counter and histogram: it doubles the series for
        # nothing a scraper uses (process-wide switch; serve owns the process)
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.board_collector = BoardCollector()
        self.registry.register(self.board_collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        reg = self.registry
        self.claims = Counter(
            "lanewarden_claims", "Runs this process claimed.", ["gateway", "profile"], registry=reg
        )
        self.runs_finished = Counter(
            "lanewarden_runs_finished",
            "Runs this process finished, by outcome (failed and timed_out are task errors; "
            "gateway_down, backpressure, lost and released are infrastructure; "
            "discarded = the task was cancelled or reclaimed meanwhile).",
            ["gateway", "outcome"],
            registry=reg,
        )
        self.latency = Histogram(
            "lanewarden_request_latency_seconds",
            "Duration of succeeded runs (the whole request), per gateway.",
            ["gateway"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.ttft = Histogram(
            "lanewarden_time_to_first_token_seconds",
            "Time to the first streamed token of succeeded LLM runs, per gateway.",
            ["gateway"],
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.dispatch_delay = Histogram(
            "lanewarden_dispatch_delay_seconds",
            "From dispatchable (ready, not_before passed) to claimed, per profile.",
            ["profile"],
            buckets=DELAY_BUCKETS,
            registry=reg,
        )
        self.tokens = Counter(
            "lanewarden_tokens", "Tokens used by finished runs.", ["gateway", "kind"], registry=reg
        )
        self.job_runs = Counter(
            "lanewarden_scheduler_job_runs", "Scheduler jobs run (leader only).", ["job"], registry=reg
        )
        self.job_misfires = Counter(
            "lanewarden_scheduler_job_misfires",
            "Scheduler jobs skipped because they fired too late (past misfire_grace_seconds).",
            ["job"],
            registry=reg,
        )
        self.job_errors = Counter(
            "lanewarden_scheduler_job_errors", "Scheduler jobs whose command failed.", ["job"], registry=reg
        )
        leader = Gauge("lanewarden_leader", "1 while this process holds the leader lease.", registry=reg)
        is_leader = is_leader or (lambda: False)
        leader.set_function(lambda: 1.0 if is_leader() else 0.0)
        self.workers = Gauge("lanewarden_process_workers", "Runs executing in this process.", registry=reg)
        self.info = Info("lanewarden_process", "This serve process.", registry=reg)
        self.info.info(self._process_info(""))
        for name in board.config.gateways:
            for outcome in RUN_OUTCOMES:
                self.runs_finished.labels(name, outcome)  # zero series, so rate() works from the start
        self.observer = MetricsObserver(self)
        self._db_was_up = True

    def attach_dispatcher(self, dispatcher: Dispatcher) -> None:
        """Name this process after its dispatcher and count its workers live."""
        self.info.info(self._process_info(dispatcher.id))
        self.workers.set_function(lambda: float(len(dispatcher.workers)))
        skew = Gauge(
            "lanewarden_clock_skew_seconds",
            "This host's clock minus the database's, measured at each heartbeat (NaN before the first).",
            registry=self.registry,
        )
        skew.set_function(lambda: math.nan if dispatcher.clock_skew is None else dispatcher.clock_skew)

    def _process_info(self, dispatcher_id: str) -> dict[str, str]:
        try:
            from importlib.metadata import version

            package = version("lanewarden")
        except Exception:  # running from a source tree that is not installed
            package = "unknown"
        return {
            "version": package,
            "dispatcher": dispatcher_id,
            "host": socket.gethostname()[:64],
            "pid": str(os.getpid()),
            "database": self.board.db.dialect,
        }

    # --------------------------------------------------------- scheduler API

    def job_run(self, name: str) -> None:
        self.job_runs.labels(name).inc()

    def job_misfire(self, name: str) -> None:
        self.job_misfires.labels(name).inc()

    def job_error(self, name: str) -> None:
        self.job_errors.labels(name).inc()

    def job_ran(self, name: str, outcome: str) -> None:
        """The window scheduler's run hook: ``outcome`` is ok, failed, missed or error."""
        if outcome in ("ok", Outcome.FAILED):
            self.job_run(name)
        if outcome in (Outcome.FAILED, "error"):
            self.job_error(name)
        if outcome == "missed":
            self.job_misfire(name)

    # ------------------------------------------------------- dispatcher hooks

    def record_claim(self, claim: Claim) -> None:
        gateway = claim.gateway or NO_GATEWAY
        self.claims.labels(gateway, claim.profile).inc()
        dispatchable_since = claim.ready_at
        not_before = claim.task.not_before
        if not_before is not None and not_before > dispatchable_since:
            dispatchable_since = not_before
        delay = (claim.claimed_at - dispatchable_since).total_seconds()
        self.dispatch_delay.labels(claim.profile).observe(max(0.0, delay))

    def record_finish(self, completion: Completion, result: Finished, gateway: str | None) -> None:
        label = gateway or NO_GATEWAY
        outcome = completion.outcome if result.accepted else "discarded"
        self.runs_finished.labels(label, outcome).inc()
        if not result.accepted or completion.outcome != Outcome.SUCCEEDED:
            return
        if completion.latency_ms is not None:
            self.latency.labels(label).observe(completion.latency_ms / 1000)
        if completion.ttft_ms is not None:
            self.ttft.labels(label).observe(completion.ttft_ms / 1000)
        if completion.prompt_tokens:
            self.tokens.labels(label, "prompt").inc(completion.prompt_tokens)
        if completion.completion_tokens:
            self.tokens.labels(label, "completion").inc(completion.completion_tokens)

    # ----------------------------------------------------------------- scrape

    async def scrape(self) -> bytes:
        """The text exposition; board figures are read in a thread, never on the loop."""
        try:
            snapshot: BoardSnapshot | None = await asyncio.wait_for(
                asyncio.to_thread(load_snapshot, self.board), timeout=SCRAPE_DB_TIMEOUT
            )
            if not self._db_was_up:
                log.info("metrics: the board database answers again")
            self._db_was_up = True
        except Exception as exc:  # database down or slow: serve the process figures anyway
            if self._db_was_up:
                log.warning(
                    "metrics: cannot read the board (%s); board gauges are left out", type(exc).__name__
                )
            self._db_was_up = False
            snapshot = None
        # no await between these two lines: concurrent scrapes cannot mix snapshots
        self.board_collector.snapshot = snapshot
        return generate_latest(self.registry)
