"""The gateway strip across the top of the board, and the paused-scopes banner.

Every figure comes from the read model's definitions (core/readmodel.py, core/caps.py),
as ``status`` and ``/metrics`` do: health, in flight / limit / cap, latency over the
recent window, the adaptive limit's last recorded reason. The strip adds tokens per
second over that window and a sparkline of completion tokens per minute. It reads only
what it shows (no process list, node or tune figures), because every open page's first
screen pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from lanewarden.core.caps import Limits, Usage
from lanewarden.core.clock import format_seconds, utcnow
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.db import Database
from lanewarden.core.readmodel import (
    RECENT,
    RunStats,
    gateway_readings,
    limit_history,
    recent_runs,
    run_stats,
)
from lanewarden.core.schema import runs
from sqlalchemy import select

SPARK_MINUTES = 30


@dataclass(frozen=True, slots=True)
class GatewayTile:
    name: str
    healthy: bool | None
    paused: bool
    adaptive: bool
    in_flight: int
    limit: int
    cap: int
    stats: RunStats
    limit_reason: str | None
    tokens_per_second: float | None
    spark: list[int]  # completion tokens per minute, oldest first
    checked_seconds_ago: float | None = None  # the last probe's age (core/readmodel.py)
    stale: bool = False  # not probed for a few probe intervals: shown greyed

    @property
    def checked(self) -> str:
        if self.checked_seconds_ago is None:
            return "never probed"
        age = f"checked {format_seconds(self.checked_seconds_ago)} ago"
        return f"stale, {age}" if self.stale else age

    @property
    def health(self) -> str:
        return {True: "up", False: "down", None: "unknown"}[self.healthy]

    @property
    def spark_points(self) -> str:
        """SVG polyline points in a 100 x 20 box."""
        if not self.spark or max(self.spark) == 0:
            return ""
        top = max(self.spark)
        step = 100 / max(1, len(self.spark) - 1)
        return " ".join(f"{i * step:.1f},{20 - 18 * v / top:.1f}" for i, v in enumerate(self.spark))


@dataclass(frozen=True, slots=True)
class Strip:
    gateways: list[GatewayTile]
    paused: list[str]  # "board", "profile researcher", "gateway gpu1"
    active: int
    board_cap: int
    windowed: bool


def load_strip(db: Database, config: LanewardenConfig) -> Strip:
    now = utcnow()
    since = now - timedelta(minutes=SPARK_MINUTES)
    with db.read() as conn:
        limits = Limits.load(conn, config)
        usage = Usage.load(conn)
        samples = recent_runs(conn, now - RECENT)
        readings = gateway_readings(conn, config, now)
        # the last recorded change of each gateway's limit says why it is where it is
        reasons = {name: rows[-1].reason for name, rows in limit_history(conn, now).items() if rows}
        finished = conn.execute(
            select(runs.c.gateway, runs.c.finished_at, runs.c.completion_tokens).where(
                runs.c.gateway.is_not(None), runs.c.finished_at > since, runs.c.completion_tokens.is_not(None)
            )
        ).all()
    per_minute: dict[str, list[int]] = {name: [0] * SPARK_MINUTES for name in config.gateways}
    recent: dict[str, int] = {}
    for gateway, at, tokens in finished:
        if gateway not in per_minute:
            continue
        minute = int((now - at).total_seconds() // 60)
        if 0 <= minute < SPARK_MINUTES:
            per_minute[gateway][SPARK_MINUTES - 1 - minute] += tokens
        if now - at <= RECENT:
            recent[gateway] = recent.get(gateway, 0) + tokens
    tiles = []
    for name, gateway in sorted(config.gateways.items()):
        window = limits.gateways[name]
        tiles.append(
            GatewayTile(
                name=name,
                healthy=window.healthy,
                paused=limits.is_paused("gateway", name),
                adaptive=gateway.adaptive,
                in_flight=usage.by_gateway.get(name, 0),
                limit=window.limit,
                cap=window.cap,
                stats=run_stats(samples.get(name, [])),
                limit_reason=reasons.get(name),
                tokens_per_second=(recent[name] / RECENT.total_seconds()) if name in recent else None,
                spark=per_minute[name],
                checked_seconds_ago=readings[name].age_seconds,
                stale=readings[name].stale,
            )
        )
    labels = [scope if not name else f"{scope} {name}" for scope, name in sorted(limits.paused)]
    return Strip(tiles, labels, usage.total, limits.board_cap, not config.kanban.dispatcher.enabled)
