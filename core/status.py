"""The board at a glance: queue shape, each gateway and each profile.

Every figure comes from the read model (core/readmodel.py), so status, /metrics, doctor
and the alerts agree: latency and error figures from the runs of the last five minutes,
"oldest ready" as the oldest *dispatchable* task, processes counted live as the claim
kernel counts them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from lanewarden.core.caps import Limits, Usage
from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.db import Database
from lanewarden.core.lanes import lane_condition
from lanewarden.core.liveness import database_now
from lanewarden.core.nodes import NodeFigures, NodeView
from lanewarden.core.readmodel import (
    RECENT,
    gateway_readings,
    held_back,
    last_heartbeat,
    limit_reasons,
    live_dispatchers,
    node_views,
    oldest_dispatchable,
    recent_runs,
    released_count,
    run_stats,
    task_counts,
)
from lanewarden.core.schema import leases, tasks
from lanewarden.core.statuses import Status
from lanewarden.core.tune import Advice, recent_advice
from sqlalchemy import func, select


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    name: str
    kind: str
    base_url: str
    healthy: bool | None
    in_flight: int
    limit: int
    cap: int
    paused: bool
    adaptive: bool
    requests_5m: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    error_rate: float | None
    timeout_rate: float | None
    server_running: float | None
    server_waiting: float | None
    last_error: str | None
    backoff_until: datetime | None
    limit_reason: str | None = None  # the last recorded change's reason ("gain +31% at 6", "deferred>0")
    checked_seconds_ago: float | None = None  # age of the last probe; None: never probed
    stale: bool = True  # no probe within a few probe intervals: health is only what it was


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    name: str
    active: int
    cap: int
    ready: int
    paused: bool
    gateway: str | None


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The host beside a gateway (node exporters): the last figures read and their age."""

    gateway: str
    state: str  # "known", "unknown" (no exporter answered the last round), "not read yet"
    age_seconds: float | None  # of the figures shown
    gpu_util: float | None
    vram_used_bytes: float | None
    vram_total_bytes: float | None
    cpu_busy: float | None
    load1: float | None
    ram_available_bytes: float | None
    ram_total_bytes: float | None
    gpu_temperature_c: float | None
    gpu_power_w: float | None
    gpus: list[dict[str, Any]]
    errors: list[str]

    @classmethod
    def of(cls, view: NodeView, now: datetime) -> NodeStatus:
        shown = view.last_known.figures if view.last_known is not None else NodeFigures()
        state = "not read yet" if view.latest is None else "known" if view.known else "unknown"
        return cls(
            gateway=view.gateway,
            state=state,
            age_seconds=view.age_seconds(now),
            gpu_util=shown.gpu_util,
            vram_used_bytes=shown.vram_used_bytes,
            vram_total_bytes=shown.vram_total_bytes,
            cpu_busy=shown.cpu_busy,
            load1=shown.load1,
            ram_available_bytes=shown.ram_available_bytes,
            ram_total_bytes=shown.ram_total_bytes,
            gpu_temperature_c=shown.gpu_temperature_c,
            gpu_power_w=shown.gpu_power_w,
            gpus=[g.to_json() for g in shown.gpus],
            errors=list(view.latest.figures.errors) if view.latest is not None else [],
        )


@dataclass(frozen=True, slots=True)
class StatusReport:
    counts: dict[str, int]  # by stored status: "ready" counts released and waiting tasks too
    released: int
    oldest_ready_seconds: float | None
    active: int
    board_cap: int
    board_paused: bool
    windowed: bool
    gateways: list[GatewayStatus]
    profiles: list[ProfileStatus]
    processes: list[dict[str, Any]] = field(default_factory=list)
    leader: str | None = None
    at: datetime = field(default_factory=utcnow)
    nodes: list[NodeStatus] = field(default_factory=list)
    # `tune`'s verdict per gateway (status shows the ones that propose a change)
    advice: list[Advice] = field(default_factory=list)
    waiting: int = 0  # ready but held by a parent not done or a not_before ahead

    @property
    def lanes(self) -> dict[str, int]:
        """Counts by lane as people see them: ready splits into ready, released and waiting."""
        shown = dict(self.counts)
        shown["ready"] = self.counts.get("ready", 0) - self.released - self.waiting
        shown["released"] = self.released
        shown["waiting"] = self.waiting
        return shown

    # when any process last heartbeated, live or not ("no live process since 18:40")
    last_heartbeat_at: datetime | None = None
    # why dispatchable work is not starting: (reason, how many tasks), most common first
    held_back: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["lanes"] = self.lanes
        data["last_heartbeat_at"] = self.last_heartbeat_at.isoformat() if self.last_heartbeat_at else None
        data["held_back"] = [{"reason": reason, "tasks": n} for reason, n in self.held_back]
        for gw in data["gateways"]:
            if gw["backoff_until"] is not None:
                gw["backoff_until"] = gw["backoff_until"].isoformat()
        for proc in data["processes"]:
            for key, value in proc.items():
                if isinstance(value, datetime):
                    proc[key] = value.isoformat()
        return data


def build_status(db: Database, config: LanewardenConfig) -> StatusReport:
    with db.read() as conn:
        now = database_now(conn)  # heartbeats and leases are on the database's clock
        limits = Limits.load(conn, config)
        usage = Usage.load(conn)
        counts = task_counts(conn)
        oldest = oldest_dispatchable(conn, now)
        released = released_count(conn)
        waiting = conn.execute(select(func.count()).where(lane_condition("waiting", now))).scalar_one()
        ready_by_profile = dict(
            conn.execute(
                select(tasks.c.profile, func.count())
                .where(tasks.c.status == Status.READY)
                .group_by(tasks.c.profile)
            ).all()
        )
        samples = recent_runs(conn, now - RECENT)
        readings = gateway_readings(conn, config, now)
        processes = [dict(r._mapping) for r in live_dispatchers(conn, config, now)]
        nodes = [NodeStatus.of(view, now) for view in node_views(conn, config)]
        advice = recent_advice(db.url, conn, config)
        leader_row = conn.execute(select(leases).where(leases.c.name == "leader")).first()
        reasons = limit_reasons(conn, config.gateways)
        heartbeat = last_heartbeat(conn)
        holding = held_back(conn, config, now)
    gateways = []
    for name, gw in sorted(config.gateways.items()):
        window = limits.gateways[name]
        stats = run_stats(samples.get(name, []))
        reading = readings[name]
        sig = reading.signals
        gateways.append(
            GatewayStatus(
                name=name,
                kind=gw.kind,
                base_url=gw.base_url,
                healthy=window.healthy,
                in_flight=usage.by_gateway.get(name, 0),
                limit=window.limit,
                cap=window.cap,
                paused=limits.is_paused("gateway", name),
                adaptive=gw.adaptive,
                requests_5m=stats.requests,
                latency_p50_ms=stats.latency_p50_ms,
                latency_p95_ms=stats.latency_p95_ms,
                ttft_p50_ms=stats.ttft_p50_ms,
                error_rate=stats.error_rate,
                timeout_rate=stats.timeout_rate,
                server_running=sig.get("running"),
                server_waiting=sig.get("waiting"),
                last_error=window.last_error,
                backoff_until=window.backoff_until
                if window.backoff_until and window.backoff_until > now
                else None,
                limit_reason=reasons.get(name),
                checked_seconds_ago=reading.age_seconds,
                stale=reading.stale,
            )
        )
    profiles = [
        ProfileStatus(
            name=name,
            active=usage.by_profile.get(name, 0),
            cap=cap,
            ready=int(ready_by_profile.get(name, 0)),
            paused=limits.is_paused("profile", name),
            gateway=config.profiles[name].gateway,
        )
        for name, cap in sorted(limits.profile_caps.items())
    ]
    leader = None
    if leader_row is not None and leader_row.expires_at > now:
        leader = leader_row.holder
    return StatusReport(
        counts=counts,
        released=released,
        oldest_ready_seconds=oldest.waited(now).total_seconds() if oldest else None,
        active=usage.total,
        board_cap=limits.board_cap,
        board_paused=limits.is_paused("board", ""),
        windowed=not config.kanban.dispatcher.enabled,
        gateways=gateways,
        profiles=profiles,
        processes=processes,
        leader=leader,
        at=now,
        nodes=nodes,
        advice=advice,
        waiting=int(waiting),
        last_heartbeat_at=heartbeat,
        held_back=holding,
    )
