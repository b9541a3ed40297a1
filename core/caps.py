"""The three caps (board, profile, gateway), pauses and the gateways' current windows.

The caps are the board's, not each process's: they are rows in the database
(``cap_overrides``), seeded from the config of the first ``serve`` to start (``set_by =
'config'``) and changed by ``caps set`` or by ``caps reset``, which applies the config of
whoever runs it. Every process enforces the same values; one whose config says
otherwise says so at start and in ``doctor`` (``config_disagreements``). A cap with no
row yet (a board no ``serve`` has opened, a gateway just added) falls back to the
config. Pauses are rows too. ``Limits.load`` reads all of it in one go inside the
caller's transaction, so a claim sees one consistent picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lanewarden.core.config import LanewardenConfig
from lanewarden.core.schema import cap_overrides, gateway_state, pauses, runs
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

SCOPES = ("board", "profile", "gateway")
# ``set_by`` of a cap row that came from a config file (seeded, or ``caps reset``)
FROM_CONFIG = "config"
CapKey = tuple[str, str]  # (scope, name); the board's own cap is ("board", "")


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
    overrides: dict[CapKey, int] = field(default_factory=dict)  # set by `caps set`, not a config
    # this process's config values that differ from the board's (which apply)
    config_differs: dict[CapKey, int] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: Connection, config: LanewardenConfig) -> Limits:
        rows = conn.execute(
            select(cap_overrides.c.scope, cap_overrides.c.name, cap_overrides.c.value, cap_overrides.c.set_by)
        ).all()
        board_caps = {(r.scope, r.name): r.value for r in rows}
        overrides = {(r.scope, r.name): r.value for r in rows if r.set_by != FROM_CONFIG}
        paused = {(r.scope, r.name) for r in conn.execute(select(pauses.c.scope, pauses.c.name))}
        states = {r.name: r for r in conn.execute(select(gateway_state))}
        board_cap = board_caps.get(("board", ""), config.kanban.dispatcher.max_active_tasks)
        profile_caps = {
            name: board_caps.get(("profile", name), config.profile_cap(name)) for name in config.profiles
        }
        gateways = {}
        for name, gw in config.gateways.items():
            state = states.get(name)
            current_limit = None if state is None else state.current_limit
            if gw.adaptive and (state is None or state.limiter is None):
                current_limit = 1  # an adaptive gateway starts by measuring its no-load latency
            gateways[name] = GatewayWindow(
                name=name,
                cap=board_caps.get(("gateway", name), gw.max_concurrency),
                healthy=None if state is None else state.healthy,
                current_limit=current_limit,
                backoff_until=None if state is None else state.backoff_until,
                last_error=None if state is None else state.last_error,
            )
        differs = {
            key: value
            for key, value in config_caps(config).items()
            if key in board_caps and board_caps[key] != value
        }
        return cls(board_cap, profile_caps, gateways, paused, overrides, differs)

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


def config_caps(config: LanewardenConfig) -> dict[CapKey, int]:
    """The caps a config file asks for, keyed like the board's cap rows."""
    caps: dict[CapKey, int] = {("board", ""): config.kanban.dispatcher.max_active_tasks}
    caps.update({("profile", name): config.profile_cap(name) for name in config.profiles})
    caps.update({("gateway", name): gw.max_concurrency for name, gw in config.gateways.items()})
    return caps


def seed_caps(
    conn: Connection, config: LanewardenConfig, now: datetime, keys: list[CapKey] | None = None
) -> None:
    """Give the board the config's value for each cap it has no row for (all of them the
    first time a ``serve`` opens the board); an existing row always wins, also against a
    process seeding at the same moment."""
    wanted = config_caps(config)
    rows = [
        {"scope": scope, "name": name, "value": value, "set_by": FROM_CONFIG, "set_at": now}
        for (scope, name), value in wanted.items()
        if keys is None or (scope, name) in keys
    ]
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(cap_overrides).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(cap_overrides).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - only the two engines above are supported
        conn.execute(insert(cap_overrides), rows)


def config_disagreements(limits: Limits) -> str:
    """One line naming each cap where this process's config differs from the board's."""
    parts = []
    for (scope, name), value in sorted(limits.config_differs.items()):
        key = "max_active_tasks" if scope == "board" else scope_label(scope, name)
        board_value = (
            limits.board_cap
            if scope == "board"
            else limits.profile_caps.get(name)
            if scope == "profile"
            else limits.gateways[name].cap
        )
        parts.append(f"{key} {value} (board: {board_value})")
    return ", ".join(parts)


def scope_label(scope: str, name: str | None) -> str:
    """``board``, ``profile researcher``, ``gateway gpu1``: how people name a cap or pause."""
    return "board" if scope == "board" else f"{scope} {name}"


def gateway_cap(conn: Connection, config: LanewardenConfig, name: str) -> int:
    """The board's cap of one gateway (its row, else this config's value)."""
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
            "config": limits.config_differs.get(("board", "")),
        },
        "profiles": {
            name: {
                "in_use": usage.by_profile.get(name, 0),
                "cap": cap,
                "override": ("profile", name) in limits.overrides,
                "paused": limits.is_paused("profile", name),
                "config": limits.config_differs.get(("profile", name)),
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
                "config": limits.config_differs.get(("gateway", name)),
                "healthy": window.healthy,
            }
            for name, window in sorted(limits.gateways.items())
        },
    }
