"""The gateway strip across the top of the board, and the paused-scopes banner.

Health, in flight / limit / cap, latency and errors come from ``build_status`` (one
definition with ``lanewarden status``); the strip adds the adaptive limit's last reason
(its history table), tokens per second over the same five minutes, and a sparkline of
completion tokens per minute over the last half hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from lanewarden.core.caps import Limits
from lanewarden.core.config import LanewardenConfig
from lanewarden.core.db import Database
from lanewarden.core.readmodel import RECENT, limit_history
from lanewarden.core.schema import runs
from lanewarden.core.status import GatewayStatus, build_status
from sqlalchemy import select

SPARK_MINUTES = 30


@dataclass(frozen=True, slots=True)
class GatewayTile:
    status: GatewayStatus
    limit_reason: str | None
    tokens_per_second: float | None
    spark: list[int]  # completion tokens per minute, oldest first

    @property
    def health(self) -> str:
        return {True: "up", False: "down", None: "unknown"}[self.status.healthy]

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
    report = build_status(db, config)
    now = report.at
    since = now - timedelta(minutes=SPARK_MINUTES)
    with db.read() as conn:
        # the last recorded change of each gateway's limit says why it is where it is
        reasons = {name: rows[-1].reason for name, rows in limit_history(conn, now).items() if rows}
        finished = conn.execute(
            select(runs.c.gateway, runs.c.finished_at, runs.c.completion_tokens).where(
                runs.c.gateway.is_not(None), runs.c.finished_at > since, runs.c.completion_tokens.is_not(None)
            )
        ).all()
        paused = sorted(Limits.load(conn, config).paused)
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
    tiles = [
        GatewayTile(
            status=g,
            limit_reason=reasons.get(g.name),
            tokens_per_second=(recent[g.name] / RECENT.total_seconds()) if g.name in recent else None,
            spark=per_minute.get(g.name, []),
        )
        for g in report.gateways
    ]
    labels = [scope if not name else f"{scope} {name}" for scope, name in paused]
    return Strip(tiles, labels, report.active, report.board_cap, report.windowed)
