"""The board at a glance: queue shape, each gateway and each profile.

Latency and error figures come from the runs of the last five minutes, so every
process (and ``lanewarden status`` from a shell) sees the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lanewarden.core.caps import Limits, Usage
from lanewarden.core.clock import utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.db import Database
from lanewarden.core.schema import TASK_STATUSES, dispatchers, gateway_state, leases, runs, tasks
from sqlalchemy import Connection, func, select

WINDOW = timedelta(minutes=5)


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


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    name: str
    active: int
    cap: int
    ready: int
    paused: bool
    gateway: str | None


@dataclass(frozen=True, slots=True)
class StatusReport:
    counts: dict[str, int]
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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        for gw in data["gateways"]:
            if gw["backoff_until"] is not None:
                gw["backoff_until"] = gw["backoff_until"].isoformat()
        for proc in data["processes"]:
            for key, value in proc.items():
                if isinstance(value, datetime):
                    proc[key] = value.isoformat()
        return data


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def build_status(db: Database, config: LanewardenConfig) -> StatusReport:
    now = utcnow()
    with db.read() as conn:
        limits = Limits.load(conn, config)
        usage = Usage.load(conn)
        counts = dict.fromkeys(TASK_STATUSES, 0)
        counts.update(dict(conn.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status)).all()))
        oldest = conn.execute(select(func.min(tasks.c.updated_at)).where(tasks.c.status == "ready")).scalar()
        released = conn.execute(
            select(func.count()).where(tasks.c.status == "ready", tasks.c.released.is_(True))
        ).scalar_one()
        ready_by_profile = dict(
            conn.execute(
                select(tasks.c.profile, func.count())
                .where(tasks.c.status == "ready")
                .group_by(tasks.c.profile)
            ).all()
        )
        samples = _recent_runs(conn, now - WINDOW)
        signals = {
            r.name: r.signals or {}
            for r in conn.execute(select(gateway_state.c.name, gateway_state.c.signals))
        }
        processes = [
            dict(r._mapping)
            for r in conn.execute(
                select(dispatchers)
                .where(dispatchers.c.heartbeat_at > now - timedelta(minutes=2))
                .order_by(dispatchers.c.id)
            )
        ]
        leader_row = conn.execute(select(leases).where(leases.c.name == "leader")).first()
    gateways = []
    for name, gw in sorted(config.gateways.items()):
        window = limits.gateways[name]
        mine = samples.get(name, [])
        latencies = [s[1] for s in mine if s[0] == "succeeded" and s[1] is not None]
        ttfts = [s[2] for s in mine if s[0] == "succeeded" and s[2] is not None]
        finished = [
            s for s in mine if s[0] in ("succeeded", "failed", "timed_out", "backpressure", "gateway_down")
        ]
        errors = sum(1 for s in finished if s[0] in ("failed", "backpressure", "gateway_down"))
        timeouts = sum(1 for s in finished if s[0] == "timed_out")
        sig = signals.get(name, {})
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
                requests_5m=len(finished),
                latency_p50_ms=percentile(latencies, 50),
                latency_p95_ms=percentile(latencies, 95),
                ttft_p50_ms=percentile(ttfts, 50),
                error_rate=(errors / len(finished)) if finished else None,
                timeout_rate=(timeouts / len(finished)) if finished else None,
                server_running=sig.get("running"),
                server_waiting=sig.get("waiting"),
                last_error=window.last_error,
                backoff_until=window.backoff_until
                if window.backoff_until and window.backoff_until > now
                else None,
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
        counts={k: int(v) for k, v in counts.items()},
        released=int(released),
        oldest_ready_seconds=(now - oldest).total_seconds() if oldest else None,
        active=usage.total,
        board_cap=limits.board_cap,
        board_paused=limits.is_paused("board", ""),
        windowed=not config.kanban.dispatcher.enabled,
        gateways=gateways,
        profiles=profiles,
        processes=processes,
        leader=leader,
        at=now,
    )


def _recent_runs(
    conn: Connection, since: datetime
) -> dict[str, list[tuple[str, float | None, float | None]]]:
    rows = conn.execute(
        select(runs.c.gateway, runs.c.outcome, runs.c.latency_ms, runs.c.ttft_ms).where(
            runs.c.gateway.is_not(None), runs.c.finished_at > since
        )
    )
    found: dict[str, list[tuple[str, float | None, float | None]]] = {}
    for r in rows:
        found.setdefault(r.gateway, []).append((r.outcome, r.latency_ms, r.ttft_ms))
    return found
