"""The three caps (board, profile, gateway), pauses and the gateways' current windows.

The config gives defaults; live changes (``caps set``, ``pause``) are rows in the
database that override it for every process on the board. ``Limits.load`` reads all of
it in one go inside the caller's transaction, so a claim sees one consistent picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lanewarden.core.config import LanewardenConfig
from lanewarden.core.schema import cap_overrides, gateway_state, pauses, runs
from sqlalchemy import Connection, func, select

SCOPES = ("board", "profile", "gateway")


@dataclass(frozen=True, slots=True)
class GatewayWindow:
    """What the dispatcher may send to one gateway right now."""

    name: str
    cap: int
    healthy: bool | None  # None: not probed yet
    current_limit: int | None  # slow start / adaptive window; None means the cap
    backoff_until: datetime | None
    last_error: str | None

    @property
    def limit(self) -> int:
        if self.current_limit is None:
            return self.cap
        return max(0, min(self.cap, self.current_limit))


@dataclass(slots=True)
class Limits:
    board_cap: int
    profile_caps: dict[str, int]
    gateways: dict[str, GatewayWindow]
    paused: set[tuple[str, str]] = field(default_factory=set)
    overrides: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: Connection, config: LanewardenConfig) -> Limits:
        overrides = {(r.scope, r.name): r.value for r in conn.execute(select(cap_overrides))}
        paused = {(r.scope, r.name) for r in conn.execute(select(pauses.c.scope, pauses.c.name))}
        states = {r.name: r for r in conn.execute(select(gateway_state))}
        board_cap = overrides.get(("board", ""), config.kanban.dispatcher.max_active_tasks)
        profile_caps = {
            name: overrides.get(("profile", name), config.profile_cap(name)) for name in config.profiles
        }
        gateways = {}
        for name, gw in config.gateways.items():
            state = states.get(name)
            current_limit = None if state is None else state.current_limit
            if gw.adaptive and (state is None or state.limiter is None):
                current_limit = 1  # an adaptive gateway starts by measuring its no-load latency
            gateways[name] = GatewayWindow(
                name=name,
                cap=overrides.get(("gateway", name), gw.max_concurrency),
                healthy=None if state is None else state.healthy,
                current_limit=current_limit,
                backoff_until=None if state is None else state.backoff_until,
                last_error=None if state is None else state.last_error,
            )
        return cls(board_cap, profile_caps, gateways, paused, overrides)

    def is_paused(self, scope: str, name: str = "") -> bool:
        return (scope, name) in self.paused


@dataclass(frozen=True, slots=True)
class Usage:
    """Open runs (slots in use), counted from the runs table: they never drift."""

    total: int
    by_profile: dict[str, int]
    by_gateway: dict[str, int]

    @classmethod
    def load(cls, conn: Connection) -> Usage:
        rows = conn.execute(
            select(runs.c.profile, runs.c.gateway, func.count())
            .where(runs.c.finished_at.is_(None))
            .group_by(runs.c.profile, runs.c.gateway)
        ).all()
        by_profile: dict[str, int] = {}
        by_gateway: dict[str, int] = {}
        total = 0
        for profile, gateway, count in rows:
            total += count
            by_profile[profile] = by_profile.get(profile, 0) + count
            if gateway is not None:
                by_gateway[gateway] = by_gateway.get(gateway, 0) + count
        return cls(total, by_profile, by_gateway)


def scope_label(scope: str, name: str | None) -> str:
    """``board``, ``profile researcher``, ``gateway gpu1``: how people name a cap or pause."""
    return "board" if scope == "board" else f"{scope} {name}"


def gateway_cap(conn: Connection, config: LanewardenConfig, name: str) -> int:
    override = conn.execute(
        select(cap_overrides.c.value).where(cap_overrides.c.scope == "gateway", cap_overrides.c.name == name)
    ).scalar()
    return override if override is not None else config.gateways[name].max_concurrency


def describe_caps(limits: Limits, usage: Usage) -> dict[str, Any]:
    """The caps as shown by ``caps`` and ``status``: in use / limit / cap, and who overrides."""
    return {
        "board": {
            "in_use": usage.total,
            "cap": limits.board_cap,
            "override": ("board", "") in limits.overrides,
            "paused": limits.is_paused("board", ""),
        },
        "profiles": {
            name: {
                "in_use": usage.by_profile.get(name, 0),
                "cap": cap,
                "override": ("profile", name) in limits.overrides,
                "paused": limits.is_paused("profile", name),
            }
            for name, cap in sorted(limits.profile_caps.items())
        },
        "gateways": {
            name: {
                "in_use": usage.by_gateway.get(name, 0),
                "limit": window.limit,
                "cap": window.cap,
                "override": ("gateway", name) in limits.overrides,
                "paused": limits.is_paused("gateway", name),
                "healthy": window.healthy,
            }
            for name, window in sorted(limits.gateways.items())
        },
    }
